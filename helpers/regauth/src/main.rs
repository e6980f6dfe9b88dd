//! `docker-credential-regauth`: the router — one `credsStore: regauth` entry routes each registry
//! to a backend or another helper, per `router.json` (see `regauth::backend::router`).

use regauth::backend::router::RouterBackend;
use regauth::credhelper::{HelperInfo, serve_main};

fn main() {
    serve_main(
        &RouterBackend::from_process(),
        &HelperInfo::regauth("docker-credential-regauth"),
    )
}
