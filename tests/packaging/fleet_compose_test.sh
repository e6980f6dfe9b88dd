#!/usr/bin/env bash
# packaging/fleet/docker-compose.yml (docs/fleet.md) validates with the machine's compose (v2
# plugin, else v1), and every member is wired as the docs say: the same bucket, the same three
# --peer URLs and secret, its own --advertise and docker config.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

use_machine_compose
dir="$REPO_ROOT/packaging/fleet"
cfg=$("${compose[@]}" -f "$dir/docker-compose.yml" --project-directory "$dir" config)
pass "compose config validates"
services=$("${compose[@]}" -f "$dir/docker-compose.yml" --project-directory "$dir" config --services | sort | tr '\n' ' ')
assert_eq "services" "mkbucket runner1-proxy runner2-proxy runner3-proxy s3 " "$services"
peers="--peer http://runner1-proxy:5000 --peer http://runner2-proxy:5000 --peer http://runner3-proxy:5000"
for n in 1 2 3; do
    cmd=$(CFG="$cfg" python3 -c 'import os, sys, yaml; print(yaml.safe_load(os.environ["CFG"])["services"]["runner" + sys.argv[1] + "-proxy"]["command"])' "$n")
    assert_contains "runner$n: the shared bucket" "--store s3://regauth-cache/fleet" "$cmd"
    assert_contains "runner$n: every member" "$peers" "$cmd"
    assert_contains "runner$n: advertises itself" "--advertise http://runner$n-proxy:5000 " "$cmd"
    assert_contains "runner$n: the secret" "--peer-secret-file /run/secrets/peer_secret" "$cmd"
done
assert_contains "runner2 has its own docker config" "runner2/docker:/root/.docker:ro" "$cfg"
assert_contains "the members reach the S3 server" "AWS_ENDPOINT_URL: http://s3:9000" "$cfg"
finish
