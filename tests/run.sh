#!/usr/bin/env bash
# THE test command (README and .ci/run call it). Installs the test peers, builds every workspace binary
# (integration tests run target/debug/regauth and docker-credential-*), then runs every test target with
# REGAUTH_REQUIRE_PEERS=1 so a missing peer fails the run instead of skipping. Exits non-zero on any failure.
# Extra arguments go to `cargo test` (e.g. `bash tests/run.sh --test harness_smoke`).
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

step() { printf '\n==> %s\n' "$*"; }
t_start=$SECONDS

step "install peers"
t0=$SECONDS
bash tests/install-peers.sh
echo "(install-peers: $((SECONDS - t0)) s)"

step "cargo build --workspace"
t0=$SECONDS
cargo build --workspace
echo "(build: $((SECONDS - t0)) s)"

command -v cargo-nextest >/dev/null 2>&1 || {
    echo "cargo-nextest is missing: cargo install --locked cargo-nextest" >&2
    exit 1
}

step "cargo nextest run --workspace (REGAUTH_REQUIRE_PEERS=1)"
t0=$SECONDS
set +e
REGAUTH_REQUIRE_PEERS=1 cargo nextest run --workspace --no-fail-fast "$@"
rc=$?
set -e
echo "(nextest: $((SECONDS - t0)) s)"

rc_doc=0
if [ "$#" -eq 0 ]; then # a selection (`--test NAME`, `-E …`) is for nextest's tests only
    step "cargo test --workspace --doc"
    t0=$SECONDS
    set +e
    cargo test --workspace --doc
    rc_doc=$?
    set -e
    echo "(doc tests: $((SECONDS - t0)) s)"
fi

if [ "$rc" -eq 0 ] && [ "$rc_doc" -eq 0 ]; then
    step "PASS (total $((SECONDS - t_start)) s)"
    exit 0
fi
step "FAIL: cargo nextest exited $rc, cargo test --doc exited $rc_doc (total $((SECONDS - t_start)) s)"
[ "$rc" -ne 0 ] && exit "$rc"
exit "$rc_doc"
