# shellcheck shell=bash disable=SC2034  # RUNNER_DIR, RC, OUT, ERR are read by the test scripts
# Helpers for the packaging shell tests: assertions and recording fakes of docker/docker-compose.
# Each test script sources this, calls `setup_fakes v1|v2`, runs the real script under test with the
# fakes first on PATH, and compares the recorded command lines with what the seed documents.

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
RUNNER_DIR="$REPO_ROOT/packaging/runner"
FAILURES=0

fail() {
    echo "FAIL: $*" >&2
    FAILURES=$((FAILURES + 1))
}

pass() {
    echo "ok: $*"
}

# assert_eq WHAT EXPECTED ACTUAL
assert_eq() {
    if [[ "$2" == "$3" ]]; then
        pass "$1"
    else
        fail "$1"
        printf '  expected: %s\n  actual:   %s\n' "$2" "$3" >&2
    fi
}

# assert_contains WHAT NEEDLE HAYSTACK
assert_contains() {
    if [[ "$3" == *"$2"* ]]; then
        pass "$1"
    else
        fail "$1: missing [$2]"
        printf '  in: %s\n' "$3" >&2
    fi
}

# use_machine_compose: sets the array `compose` to the machine's real compose (the v2 plugin, else v1
# docker-compose); exits 77 when there is neither (a failure for tests/packaging.rs, which checks
# for compose with require_peers before it runs the script).
use_machine_compose() {
    if docker compose version >/dev/null 2>&1; then
        compose=(docker compose)
    elif command -v docker-compose >/dev/null 2>&1; then
        compose=(docker-compose)
    else
        echo "SKIP: neither docker compose nor docker-compose" >&2
        exit 77
    fi
}

# shellcheck disable=SC2016  # the fakes are written with literal $ on purpose
# setup_fakes v1|v2: a fresh folder of fakes; v2 = `docker compose` works, v1 = only docker-compose.
# Every call appends one line to $FAKE_LOG: the program name and its arguments, each %q-quoted
# (so an empty argument shows as ''), and the call's stdin (if any) to $FAKE_STDIN.
setup_fakes() {
    FAKE_DIR=$(mktemp -d)
    FAKE_LOG="$FAKE_DIR/calls.log"
    FAKE_STDIN="$FAKE_DIR/stdin.log"
    : >"$FAKE_LOG"
    : >"$FAKE_STDIN"
    export FAKE_LOG FAKE_STDIN
    local recorder
    recorder='record() { local out; out=$(basename "$0"); for a in "$@"; do out+=" $(printf %q "$a")"; done; echo "$out" >>"$FAKE_LOG"; if [[ ! -t 0 ]]; then cat >>"$FAKE_STDIN"; fi; }'
    cat >"$FAKE_DIR/docker" <<FAKE
#!/usr/bin/env bash
$recorder
if [[ "\${1:-}" == compose && "\${2:-}" == version ]]; then
    [[ "$1" == v2 ]] && { echo "Docker Compose version v2.99.0-fake"; exit 0; }
    echo "docker: unknown command: docker compose" >&2; exit 1
fi
if [[ "\${1:-}" == login || "\${1:-}" == logout ]]; then
    record "\$@" </dev/null
    # Like the real CLI: hand the credentials to the credsStore helper named in \$DOCKER_CONFIG.
    store=\$(sed -n 's/.*"credsStore": *"\([^"]*\)".*/\1/p' "\$DOCKER_CONFIG/config.json")
    echo "DOCKER_CONFIG credsStore=\$store" >>"\$FAKE_LOG"
    if [[ "\$1" == login ]]; then
        printf '{"ServerURL":"%s","Username":"fake-user","Secret":"fake-secret"}' "\$2" | "docker-credential-\$store" store
    else
        printf '%s' "\$2" | "docker-credential-\$store" erase
    fi
    exit
fi
record "\$@"
exit 0
FAKE
    if [[ "$1" == v1 ]]; then
        cat >"$FAKE_DIR/docker-compose" <<FAKE
#!/usr/bin/env bash
$recorder
record "\$@"
exit 0
FAKE
        chmod +x "$FAKE_DIR/docker-compose"
    fi
    chmod +x "$FAKE_DIR/docker"
    FAKE_PATH="$FAKE_DIR:/usr/bin:/bin"
}

# run_with_fakes CMD...: runs CMD with only the fakes and the base system on PATH; sets RC, OUT, ERR.
run_with_fakes() {
    local o e
    o=$(mktemp) e=$(mktemp)
    set +e
    env -u COMPOSE PATH="$FAKE_PATH" "$@" >"$o" 2>"$e" </dev/null
    RC=$?
    set -e
    OUT=$(cat "$o") ERR=$(cat "$e")
    rm -f "$o" "$e"
}

calls() { cat "$FAKE_LOG"; }

finish() {
    [[ -n "${FAKE_DIR:-}" ]] && rm -rf "$FAKE_DIR"
    if ((FAILURES > 0)); then
        echo "$FAILURES assertion(s) failed" >&2
        exit 1
    fi
    echo "all assertions passed"
}
