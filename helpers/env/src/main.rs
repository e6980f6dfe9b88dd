//! `docker-credential-env`: read-only credentials from `REGAUTH_<HOST>_USERNAME` /
//! `REGAUTH_<HOST>_PASSWORD` (see `regauth::backend::env` for the naming rule).

use regauth::backend::env::EnvBackend;
use regauth::credhelper::{HelperInfo, serve_main};

fn main() {
    serve_main(
        &EnvBackend::from_process(),
        &HelperInfo::regauth("docker-credential-env"),
    )
}
