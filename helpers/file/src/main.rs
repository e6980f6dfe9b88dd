//! `docker-credential-file`: the encrypted file store for headless hosts (see
//! `regauth::backend::file`).

use regauth::backend::file::FileBackend;
use regauth::credhelper::{HelperInfo, serve_main};

fn main() {
    serve_main(
        &FileBackend::from_process(),
        &HelperInfo::regauth("docker-credential-file"),
    )
}
