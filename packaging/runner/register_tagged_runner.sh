#!/usr/bin/env bash
# Register a dedicated runner that picks only jobs carrying one of its tags.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

DEFAULT_URL="https://gitlab.com/ci"

usage() {
    cat <<USAGE
usage: $(basename "$0") RUNNER_NAME REGISTER_TOKEN "TAG1,TAG2" [CI_SERVER_URL]

Registers a docker-executor runner that runs only jobs tagged with one of the comma-separated tags.
If CI_SERVER_URL is missing or empty, $DEFAULT_URL is assumed.
REGISTER_TOKEN must be a legacy registration token: runners created with an authentication token
(glrt-...) get their tags in GitLab's UI; register those with register_runner.sh.
Environment: COMPOSE (compose command), RUNNER_DOCKER_IMAGE (default docker:20.10.16).
USAGE
}

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    usage
    exit 0
fi
if [[ $# -lt 3 || $# -gt 4 || -z "$1" || -z "$2" || -z "$3" ]]; then
    usage >&2
    exit 2
fi
name=$1
token=$2
tags=$3
url=${4:-}
url=${url:-$DEFAULT_URL}

if [[ "$token" == glrt-* ]]; then
    echo "error: $name: tags of a runner with an authentication token (glrt-...) are set in GitLab;" \
        "use register_runner.sh NAME TOKEN [URL]" >&2
    exit 2
fi
if [[ ! "$tags" =~ ^[^,[:space:]]+(,[^,[:space:]]+)*$ ]]; then
    echo "error: tags must be a comma-separated list without spaces or empty items, got \"$tags\"" >&2
    usage >&2
    exit 2
fi

cd "$(dirname "$0")"
# shellcheck source=lib.sh
. ./lib.sh
compose_cmd

args=(
    --non-interactive --name "$name" --url "$url" --registration-token "$token"
    --tag-list "$tags" --run-untagged=false --locked=false
)
executor_args

exec "${COMPOSE_CMD[@]}" exec -T gitlab-runner gitlab-runner register "${args[@]}"
