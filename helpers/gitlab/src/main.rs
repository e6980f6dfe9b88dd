//! `docker-credential-gitlab`: read-only credentials from GitLab CI job variables (`CI_REGISTRY*`,
//! `CI_DEPENDENCY_PROXY_*`, `CI_JOB_TOKEN`; see `regauth::backend::gitlab`).

use regauth::backend::{gitlab::GitlabBackend, init_helper_logging};
use regauth::credhelper::{HelperInfo, serve_main};

fn main() {
    init_helper_logging();
    serve_main(
        &GitlabBackend::from_process(),
        &HelperInfo::regauth("docker-credential-gitlab"),
    )
}
