#!/usr/bin/env bash
# packaging/runner/docker-compose.yml validates with the machine's compose (v2 plugin, else v1), and
# the resolved model wires dind to regauth the way the docs say.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

use_machine_compose
echo "using: ${compose[*]}"
cfg=$(REGAUTH_UPSTREAM_ARGS="--upstream myreg=https://registry.example.com:5000" \
    "${compose[@]}" -f "$RUNNER_DIR/docker-compose.yml" --project-directory "$RUNNER_DIR" config)
pass "compose config validates"
services=$("${compose[@]}" -f "$RUNNER_DIR/docker-compose.yml" --project-directory "$RUNNER_DIR" config --services | sort | tr '\n' ' ')
assert_eq "three services" "docker gitlab-runner regauth " "$services"
assert_contains "regauth listens on the stack network" "proxy --listen 0.0.0.0:5000 --allow-anonymous" "$cfg"
assert_contains "upstreams come from REGAUTH_UPSTREAM_ARGS" "--upstream myreg=https://registry.example.com:5000" "$cfg"
assert_contains "dind mounts daemon.json" "config/daemon.json:/etc/docker/daemon.json:ro" "$cfg"
assert_contains "dind mounts hosts.toml folders" "config/certs.d:/etc/docker/certs.d:ro" "$cfg"
assert_contains "dind is privileged" "privileged: true" "$cfg"
assert_contains "runner uses dind" "DOCKER_HOST: tcp://docker:2375" "$cfg"
if grep -Eq '^\s+ports:' "$RUNNER_DIR/docker-compose.yml"; then
    fail "a port is published: anonymous proxy access must stay on the private network"
fi

# daemon.json and hosts.toml say what the README says.
mirrors=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["registry-mirrors"], d["insecure-registries"])' "$RUNNER_DIR/config/daemon.json")
assert_eq "daemon.json mirror + insecure" "['http://regauth:5000'] ['regauth:5000']" "$mirrors"
hosts=$(python3 -c 'import tomllib,sys; d=tomllib.load(open(sys.argv[1],"rb")); print(d["host"])' "$RUNNER_DIR/config/certs.d/_default/hosts.toml")
assert_eq "hosts.toml routes to regauth for pull+resolve" "{'http://regauth:5000': {'capabilities': ['pull', 'resolve']}}" "$hosts"
# config.toml: the seed's working shape.
seed=$(python3 - "$RUNNER_DIR/config/config.toml" <<'PY'
import sys, tomllib
d = tomllib.load(open(sys.argv[1], "rb"))
r = d["runners"][0]
print(d["concurrent"], r["executor"], r["url"], r["environment"], r["docker"]["privileged"],
      r["docker"]["volumes"], r["docker"]["host"], r["docker"]["tls_verify"], "DOCKER_AUTH_CONFIG" in str(r))
PY
)
assert_eq "config.toml shape" "3 docker https://gitlab.com/ci ['DOCKER_HOST=tcp://docker:2375/', 'DOCKER_TLS_CERTDIR='] True ['/cache:/cache', '/builds:/builds'] tcp://docker:2375 False False" "$seed"
finish
