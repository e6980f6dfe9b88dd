#!/usr/bin/env bash
# Log in to a registry and store the credentials in regauth's file store (inside the stack's
# shellcheck source-path=SCRIPTDIR
# `regauth-config` volume), where the proxy reads them. Nothing is written to ~/.docker.
#
# How: the host's `docker login` does the prompting and checks the credentials against the
# registry, with a throw-away DOCKER_CONFIG whose credsStore is bin/docker-credential-regauth-compose;
# that shim forwards the helper protocol to `docker-credential-file` in the regauth container.
set -euo pipefail

usage() {
    cat <<USAGE
usage: $(basename "$0") REGISTRY [docker login options, e.g. --username USER --password-stdin]
       $(basename "$0") --logout REGISTRY

REGISTRY is host[:port] as images name it (docker.io for Docker Hub).
Environment: COMPOSE (compose command).
USAGE
}

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    usage
    exit 0
fi
action=login
if [[ "${1:-}" == "--logout" ]]; then
    action=logout
    shift
fi
if [[ $# -lt 1 || -z "$1" || "$1" == -* ]] || [[ $action == logout && $# -ne 1 ]]; then
    usage >&2
    exit 2
fi
registry=$1
shift

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"
compose_cmd

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf '{"credsStore": "regauth-compose"}\n' >"$tmp/config.json"

export REGAUTH_COMPOSE="${COMPOSE_CMD[*]}"
export REGAUTH_COMPOSE_FILE="$here/docker-compose.yml"
export DOCKER_CONFIG="$tmp"
export PATH="$here/bin:$PATH"
docker "$action" "$registry" "$@"
