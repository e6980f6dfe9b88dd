#!/usr/bin/env bash
# Installs the real peers the integration tests talk to (see ../shared/reference/deps-and-test-peers.md §3):
#   * Debian packages: the CNCF registry, skopeo, htpasswd, busybox-static (test image payload), the
#     Secret Service / pass / keyutils stacks, reference credential helpers, shellcheck, hyperfine, jq;
#   * a Python venv `.venv-moto` at the repo root with moto (ECR mock; its S3 API is the bucket of
#     tests/fleet_store.rs, `regauth proxy --store`) and cryptography (token server).
# Idempotent and fast when everything is present: apt-get runs only if a package is missing, pip only if
# the venv cannot import what the tests need. Needs root (or sudo) only when something must be installed.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'install-peers: %s\n' "$*"; }

APT_PACKAGES=(
    docker-registry skopeo apache2-utils busybox-static gnome-keyring libsecret-tools
    golang-docker-credential-helpers amazon-ecr-credential-helper pass keyutils dbus shellcheck
    hyperfine jq
    # packaging tests (tests/packaging.rs): compose v1, make, systemd-analyze, readelf/strip.
    docker-compose make systemd binutils
    # tests/proxy_docker.rs: `ctr`, and `containerd` as a harness peer when dockerd's own is not there.
    containerd
    # tests/proxy_connect.rs: `ip` makes the bridge of the test's own dockerd.
    iproute2
    # Also called by tests (TLS test CA, HTTP probes), usually present already.
    openssl curl
    # Needed to build .venv-moto on a minimal Debian (already there on most machines).
    python3 python3-venv ca-certificates
)
PIP_PACKAGES=(moto flask flask-cors boto3 cryptography)
PY_IMPORTS="import moto, flask, flask_cors, boto3, cryptography"
VENV=.venv-moto

is_installed() {
    [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        say "ERROR: need root (or sudo) to run: $*" >&2
        exit 1
    fi
}

# --- Debian packages -------------------------------------------------------------------------------
# One dpkg-query call for all packages (the warm path must be fast). It exits non-zero when some package
# is unknown to dpkg (normal on a fresh machine), hence `|| true`: its output is still complete.
installed=$(dpkg-query -W -f='${Package} ${Status}\n' "${APT_PACKAGES[@]}" 2>/dev/null |
    awk '$NF == "installed" && $(NF-1) == "ok" { print $1 }') || true
missing=()
for p in "${APT_PACKAGES[@]}"; do
    grep -qx -- "$p" <<<"$installed" || missing+=("$p")
done
if [ "${#missing[@]}" -eq 0 ]; then
    say "apt: all ${#APT_PACKAGES[@]} packages present"
else
    say "apt: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    t0=$SECONDS
    as_root apt-get update -qq
    as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    for p in "${missing[@]}"; do
        is_installed "$p" || { say "ERROR: $p still not installed" >&2; exit 1; }
    done
    say "apt: done in $((SECONDS - t0)) s"
fi

# Binaries the harness calls directly (a package can be installed yet broken or diverted).
for b in docker-registry skopeo htpasswd busybox jq openssl curl; do
    command -v "$b" >/dev/null 2>&1 || { say "ERROR: $b not on PATH after install" >&2; exit 1; }
done
[ -x /bin/busybox ] || { say "ERROR: /bin/busybox (busybox-static) missing" >&2; exit 1; }

# --- moto venv -------------------------------------------------------------------------------------
# A stamp with the package list, written after a verified install, keeps the warm path instant.
STAMP="$VENV/.regauth-peers"
if [ -x "$VENV/bin/python" ] && [ -x "$VENV/bin/moto_server" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "${PIP_PACKAGES[*]}" ]; then
    say "venv: $VENV ready"
else
    # Debian's interpreter, not whatever shim (pyenv, …) happens to be first on PATH.
    PY=${PYTHON:-/usr/bin/python3}
    [ -x "$PY" ] || PY=$(command -v python3)
    say "venv: creating $VENV with $PY and installing ${PIP_PACKAGES[*]}"
    t0=$SECONDS
    rm -rf "$VENV"
    "$PY" -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PIP_PACKAGES[@]}"
    "$VENV/bin/python" -c "$PY_IMPORTS" || { say "ERROR: $VENV cannot import its packages" >&2; exit 1; }
    printf '%s\n' "${PIP_PACKAGES[*]}" >"$STAMP"
    say "venv: done in $((SECONDS - t0)) s"
fi

# --- test host name ------------------------------------------------------------------------------
# Go clients (skopeo, containerd, dockerd) never send loopback names or IPs through HTTPS_PROXY, so
# the CONNECT-mode tests (tests/proxy_connect.rs) reach their loopback registry by a name that is
# not localhost. Added once; never changes other lines.
TEST_HOST=registry.regauth.test
if getent hosts "$TEST_HOST" | grep -q '^127\.0\.0\.1'; then
    say "hosts: $TEST_HOST → 127.0.0.1"
else
    say "hosts: adding '127.0.0.1 $TEST_HOST' to /etc/hosts"
    printf '127.0.0.1 %s\n' "$TEST_HOST" | as_root tee -a /etc/hosts >/dev/null
fi

# --- cargo-nextest ---------------------------------------------------------------------------------
# tests/run.sh runs the suite with it (.config/nextest.toml). Built from crates.io only when missing.
if cargo nextest --version >/dev/null 2>&1; then
    say "cargo-nextest: $(cargo nextest --version 2>/dev/null | head -n 1)"
else
    say "cargo-nextest: installing (cargo install --locked cargo-nextest)"
    t0=$SECONDS
    cargo install --locked cargo-nextest
    say "cargo-nextest: done in $((SECONDS - t0)) s"
fi
say "ok"
