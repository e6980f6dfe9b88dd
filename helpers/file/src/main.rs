//! `docker-credential-file`: the encrypted file store for headless hosts (see
//! `regauth::backend::file`).

use regauth::backend::{file::FileBackend, init_helper_logging};
use regauth::credhelper::{HelperInfo, serve_main};

fn main() {
    init_helper_logging();
    serve_main(
        &FileBackend::from_process(),
        &HelperInfo::regauth("docker-credential-file"),
    )
}
