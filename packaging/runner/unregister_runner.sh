#!/usr/bin/env bash
# Unregister a runner (by the name it was registered with) and remove it from config/config.toml.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

usage() {
    echo "usage: $(basename "$0") RUNNER_NAME"
    echo "Environment: COMPOSE (compose command)."
}

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    usage
    exit 0
fi
if [[ $# -ne 1 || -z "$1" ]]; then
    usage >&2
    exit 2
fi
name=$1

cd "$(dirname "$0")"
# shellcheck source=lib.sh
. ./lib.sh
compose_cmd

exec "${COMPOSE_CMD[@]}" exec -T gitlab-runner gitlab-runner unregister --name "$name"
