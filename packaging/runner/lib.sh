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

# Appends to the caller's `args` the docker-executor settings both register scripts use: the
# seed's working config.toml (dind at tcp://docker:2375, privileged, /cache and /builds volumes).
# shellcheck disable=SC2034
executor_args() {
    args+=(
        --executor docker
        --docker-host tcp://docker:2375
        --docker-image "${RUNNER_DOCKER_IMAGE:-docker:20.10.16}"
        --docker-privileged
        --docker-tlsverify=false
        --docker-volumes /cache:/cache
        --docker-volumes /builds:/builds
        --builds-dir /builds
        --cache-dir /cache
        --env DOCKER_HOST=tcp://docker:2375/
        --env DOCKER_TLS_CERTDIR=
    )
}
