//! `docker-credential-keyring`: the docker credential-helper protocol over the OS keyring.
//!
//! Thin main: all logic is in `regauth::backend::keyring` (store choice, chunking, index) and
//! `regauth::credhelper::serve_main` (protocol). Store override: `REGAUTH_KEYRING_STORE`.

use regauth::backend::keyring::LazyKeyring;
use regauth::config::locations::Env;
use regauth::credhelper::{HelperInfo, serve_main};

fn main() {
    let backend = LazyKeyring::new(Env::from_process());
    serve_main(&backend, &HelperInfo::regauth("docker-credential-keyring"))
}
