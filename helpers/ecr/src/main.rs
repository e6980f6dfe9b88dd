//! `docker-credential-ecr`: the docker credential-helper protocol over AWS ECR tokens.
//!
//! Thin main: all logic is in `regauth::backend::ecr` (host matching, profile mapping, token
//! cache, error policy) and `regauth::credhelper::serve_main` (protocol).

use regauth::backend::ecr::EcrBackend;
use regauth::config::locations::Env;
use regauth::credhelper::{Backend, BackendError, Credentials, HelperInfo, Login, serve_main};
use std::collections::BTreeMap;

/// Answers every action with the configuration error (so `--help`/`version` still work).
struct Broken(String);

impl Backend for Broken {
    fn get(&self, _: &str) -> Result<Login, BackendError> {
        Err(BackendError::Other(self.0.clone()))
    }
    fn store(&self, _: &Credentials) -> Result<(), BackendError> {
        Err(BackendError::Other(self.0.clone()))
    }
    fn erase(&self, _: &str) -> Result<(), BackendError> {
        Err(BackendError::Other(self.0.clone()))
    }
    fn list(&self) -> Result<BTreeMap<String, String>, BackendError> {
        Err(BackendError::Other(self.0.clone()))
    }
}

fn main() {
    let info = HelperInfo::regauth("docker-credential-ecr");
    match EcrBackend::from_env(&Env::from_process()) {
        Ok(b) => serve_main(&b, &info),
        Err(e) => serve_main(&Broken(e.to_string()), &info),
    }
}
