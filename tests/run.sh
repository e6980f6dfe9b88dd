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

step "cargo test --workspace (REGAUTH_REQUIRE_PEERS=1)"
t0=$SECONDS
set +e
REGAUTH_REQUIRE_PEERS=1 cargo test --workspace "$@"
rc=$?
set -e
echo "(test: $((SECONDS - t0)) s)"

if [ "$rc" -eq 0 ]; then
    step "PASS (total $((SECONDS - t_start)) s)"
else
    step "FAIL: cargo test exited $rc (total $((SECONDS - t_start)) s)"
fi
exit "$rc"
