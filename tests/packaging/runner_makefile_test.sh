#!/usr/bin/env bash
# `make -n` on packaging/runner/Makefile prints the seed's commands, with the compose flavour the
# machine has (COMPOSE detection) or the one forced by COMPOSE=; prune names prune-network right.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

mk() { env -u COMPOSE PATH="$FAKE_PATH" make --no-print-directory -s -n -C "$RUNNER_DIR" "$@"; }

for flavour in v1 v2; do
    setup_fakes "$flavour"
    if [[ $flavour == v1 ]]; then C="docker-compose"; else C="docker compose"; fi
    assert_eq "$flavour status" "$C ps" "$(mk status)"
    assert_eq "$flavour start" "touch config/config.toml
$C up -d" "$(mk start)"
    assert_eq "$flavour stop" "$C down" "$(mk stop)"
    assert_eq "$flavour restart" "$C restart" "$(mk restart)"
    assert_eq "$flavour prune-container" "$C exec -T docker docker container prune -f" "$(mk prune-container)"
    assert_eq "$flavour prune-volume" "$C exec -T docker docker volume prune -f" "$(mk prune-volume)"
    assert_eq "$flavour prune-image" "$C exec -T docker docker image prune -f" "$(mk prune-image)"
    assert_eq "$flavour prune-network" "$C exec -T docker docker network prune -f" "$(mk prune-network)"
    assert_eq "$flavour prune runs all four, network included" "$C exec -T docker docker container prune -f
$C exec -T docker docker volume prune -f
$C exec -T docker docker image prune -f
$C exec -T docker docker network prune -f
echo \"All targets pruned\"" "$(mk prune)"
    assert_eq "$flavour logs" "$C logs --tail=100 -f" "$(mk logs | sed 's/ *$//')"
    assert_eq "$flavour logs SERVICE=regauth" "$C logs --tail=100 -f regauth" "$(mk logs SERVICE=regauth)"
    assert_contains "$flavour login REGISTRY=…" "COMPOSE=\"$C\" ./login.sh \"registry.example.com:5000\"" \
        "$(mk login REGISTRY=registry.example.com:5000)"
    assert_contains "$flavour login USERNAME=…" "./login.sh \"r.example\" --username \"bob\"" \
        "$(mk login REGISTRY=r.example USERNAME=bob)"
    assert_eq "$flavour forced COMPOSE" "docker-compose -p x ps" \
        "$(env PATH="$FAKE_PATH" make --no-print-directory -s -n -C "$RUNNER_DIR" status COMPOSE="docker-compose -p x")"
    rm -rf "$FAKE_DIR"
done
FAKE_DIR=

# Really run (not -n) the guard: login without REGISTRY is a usage error and runs nothing.
setup_fakes v2
set +e
err=$(env -u COMPOSE PATH="$FAKE_PATH" make --no-print-directory -s -C "$RUNNER_DIR" login 2>&1 >/dev/null)
rc=$?
set -e
assert_eq "login without REGISTRY fails" 2 "$rc"
assert_contains "login without REGISTRY: usage" "usage: make login REGISTRY=host[:port]" "$err"
assert_eq "login without REGISTRY: nothing run" "" "$(calls)"

# Every target the seed documents exists (make -q exits 2 only for unknown targets... use -n).
for t in status start stop restart prune prune-container prune-volume prune-image prune-network login logs; do
    if ! env PATH="$FAKE_PATH" make -s -n -C "$RUNNER_DIR" "$t" REGISTRY=x >/dev/null 2>&1; then
        fail "target $t missing"
    fi
done
if grep -q 'netwok' "$RUNNER_DIR/Makefile"; then fail "the seed's prune-netwok typo is back"; fi
finish
