#!/usr/bin/env bash
# Register a catch-all runner (runs untagged jobs) in the compose stack's gitlab-runner.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

DEFAULT_URL="https://gitlab.com/ci"

usage() {
    cat <<USAGE
usage: $(basename "$0") RUNNER_NAME REGISTER_TOKEN [CI_SERVER_URL]

Registers a catch-all docker-executor runner whose jobs run on the compose 'docker' (dind) service.
If CI_SERVER_URL is missing or empty, $DEFAULT_URL is assumed.
REGISTER_TOKEN may be a legacy registration token or a runner authentication token (glrt-...).
Environment: COMPOSE (compose command), RUNNER_DOCKER_IMAGE (default docker:20.10.16).
USAGE
}

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    usage
    exit 0
fi
if [[ $# -lt 2 || $# -gt 3 || -z "$1" || -z "$2" ]]; then
    usage >&2
    exit 2
fi
name=$1
token=$2
url=${3:-}
url=${url:-$DEFAULT_URL}

cd "$(dirname "$0")"
# shellcheck source=lib.sh
. ./lib.sh
compose_cmd

args=(--non-interactive --name "$name" --url "$url")
if [[ "$token" == glrt-* ]]; then
    # Authentication tokens: tags, run-untagged and locked are set in GitLab, not at registration.
    args+=(--token "$token")
else
    args+=(--registration-token "$token" --run-untagged=true --locked=false)
fi
executor_args

exec "${COMPOSE_CMD[@]}" exec -T gitlab-runner gitlab-runner register "${args[@]}"
