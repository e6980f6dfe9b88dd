# shellcheck shell=bash
# Shared by the runner scripts: the compose command, chosen once.
#
# $COMPOSE wins when set (e.g. COMPOSE="docker-compose" or COMPOSE="docker compose"); otherwise the
# docker compose v2 plugin when `docker compose version` works, else the v1 `docker-compose`.

# COMPOSE_CMD is read by the scripts that source this file.
# shellcheck disable=SC2034
compose_cmd() {
    if [[ -n "${COMPOSE:-}" ]]; then
        read -r -a COMPOSE_CMD <<<"$COMPOSE"
    elif docker compose version >/dev/null 2>&1; then
        COMPOSE_CMD=(docker compose)
    elif command -v docker-compose >/dev/null 2>&1; then
        COMPOSE_CMD=(docker-compose)
    else
        echo "error: neither 'docker compose' nor 'docker-compose' is available" >&2
        exit 127
    fi
}
