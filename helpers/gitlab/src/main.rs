//! `docker-credential-gitlab`: read-only credentials from GitLab CI job variables (`CI_REGISTRY*`,
//! `CI_DEPENDENCY_PROXY_*`, `CI_JOB_TOKEN`; see `regauth::backend::gitlab`).

use regauth::backend::gitlab::GitlabBackend;
use regauth::credhelper::{HelperInfo, serve_main};

fn main() {
    serve_main(
        &GitlabBackend::from_process(),
        &HelperInfo::regauth("docker-credential-gitlab"),
    )
}
