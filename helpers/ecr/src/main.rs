//! `docker-credential-ecr`: the docker credential-helper protocol over AWS ECR tokens.
//!
//! Thin main: all logic is in `regauth::backend::ecr` (host matching, profile mapping, token
//! cache, error policy) and `regauth::credhelper::serve_main` (protocol).

use regauth::backend::ecr::EcrBackend;
use regauth::config::locations::Env;
use regauth::credhelper::{HelperInfo, Unavailable, serve_main};

fn main() {
    let info = HelperInfo::regauth("docker-credential-ecr");
    match EcrBackend::from_env(&Env::from_process()) {
        Ok(b) => serve_main(&b, &info),
        Err(e) => serve_main(&Unavailable(e.to_string()), &info),
    }
}
