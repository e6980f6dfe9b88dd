#!/usr/bin/env bash
# The runner scripts' argument handling, run against recording fakes of docker / docker-compose:
# the exact gitlab-runner commands, the seed's defaults, usage + exit 2 on bad arguments, and both
# compose flavours (v2 plugin and v1 docker-compose).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

REG_COMMON="--executor docker --docker-host tcp://docker:2375 --docker-image docker:20.10.16 --docker-privileged --docker-tlsverify=false --docker-volumes /cache:/cache --docker-volumes /builds:/builds --builds-dir /builds --cache-dir /cache --env DOCKER_HOST=tcp://docker:2375/ --env DOCKER_TLS_CERTDIR="

for flavour in v1 v2; do
    setup_fakes "$flavour"
    if [[ $flavour == v1 ]]; then C="docker-compose"; else C="docker compose"; fi

    # --- register_runner.sh NAME TOKEN [URL] ---
    run_with_fakes "$RUNNER_DIR/register_runner.sh" runner01 REGTOKEN123
    assert_eq "$flavour register: exit 0" 0 "$RC"
    assert_eq "$flavour register: default URL https://gitlab.com/ci, catch-all" \
        "$C exec -T gitlab-runner gitlab-runner register --non-interactive --name runner01 --url https://gitlab.com/ci --registration-token REGTOKEN123 --run-untagged=true --locked=false $REG_COMMON" \
        "$(calls)"

    : >"$FAKE_LOG"
    run_with_fakes "$RUNNER_DIR/register_runner.sh" runner01 REGTOKEN123 ""
    assert_contains "$flavour register: empty URL means https://gitlab.com/ci" "--url https://gitlab.com/ci " "$(calls)"

    : >"$FAKE_LOG"
    run_with_fakes "$RUNNER_DIR/register_runner.sh" "my runner" REGTOKEN123 https://gitlab.example.com/
    assert_eq "$flavour register: explicit URL, name with a space stays one argument" \
        "$C exec -T gitlab-runner gitlab-runner register --non-interactive --name my\\ runner --url https://gitlab.example.com/ --registration-token REGTOKEN123 --run-untagged=true --locked=false $REG_COMMON" \
        "$(calls)"

    : >"$FAKE_LOG"
    run_with_fakes "$RUNNER_DIR/register_runner.sh" runner02 glrt-abcDEF
    assert_eq "$flavour register: authentication token uses --token, no server-side flags" \
        "$C exec -T gitlab-runner gitlab-runner register --non-interactive --name runner02 --url https://gitlab.com/ci --token glrt-abcDEF $REG_COMMON" \
        "$(calls)"

    : >"$FAKE_LOG"
    RUNNER_DOCKER_IMAGE=alpine:3.20 run_with_fakes "$RUNNER_DIR/register_runner.sh" r T
    assert_contains "$flavour register: RUNNER_DOCKER_IMAGE overrides the job image" "--docker-image alpine:3.20 " "$(calls)"

    for bad in "" "onlyname" "a b c d" "'' TOKEN" "NAME ''"; do
        : >"$FAKE_LOG"
        eval "run_with_fakes \"\$RUNNER_DIR/register_runner.sh\" $bad"
        assert_eq "$flavour register [$bad]: exit 2" 2 "$RC"
        assert_contains "$flavour register [$bad]: usage on stderr" "usage: register_runner.sh RUNNER_NAME REGISTER_TOKEN [CI_SERVER_URL]" "$ERR"
        assert_eq "$flavour register [$bad]: nothing run" "" "$(calls)"
    done
    run_with_fakes "$RUNNER_DIR/register_runner.sh" --help
    assert_eq "$flavour register --help: exit 0" 0 "$RC"
    assert_contains "$flavour register --help: usage on stdout" "If CI_SERVER_URL is missing or empty, https://gitlab.com/ci is assumed." "$OUT"

    # --- register_tagged_runner.sh NAME TOKEN "TAG1,TAG2" [URL] ---
    : >"$FAKE_LOG"
    run_with_fakes "$RUNNER_DIR/register_tagged_runner.sh" tagged01 REGTOKEN123 "TAG1,TAG2"
    assert_eq "$flavour tagged: exit 0" 0 "$RC"
    assert_eq "$flavour tagged: tags, only tagged jobs, default URL" \
        "$C exec -T gitlab-runner gitlab-runner register --non-interactive --name tagged01 --url https://gitlab.com/ci --registration-token REGTOKEN123 --tag-list TAG1\\,TAG2 --run-untagged=false --locked=false $REG_COMMON" \
        "$(calls)"

    : >"$FAKE_LOG"
    run_with_fakes "$RUNNER_DIR/register_tagged_runner.sh" tagged01 REGTOKEN123 "gpu" https://gitlab.example.com/ci
    assert_contains "$flavour tagged: explicit URL" "--url https://gitlab.example.com/ci --registration-token REGTOKEN123 --tag-list gpu " "$(calls)"

    for bad in "" "n t" "n t ''" "n t 'a, b'" "n t 'a,,b'" "n t ,a" "n t a b c"; do
        : >"$FAKE_LOG"
        eval "run_with_fakes \"\$RUNNER_DIR/register_tagged_runner.sh\" $bad"
        assert_eq "$flavour tagged [$bad]: exit 2" 2 "$RC"
        assert_contains "$flavour tagged [$bad]: usage on stderr" 'usage: register_tagged_runner.sh RUNNER_NAME REGISTER_TOKEN "TAG1,TAG2" [CI_SERVER_URL]' "$ERR"
        assert_eq "$flavour tagged [$bad]: nothing run" "" "$(calls)"
    done
    run_with_fakes "$RUNNER_DIR/register_tagged_runner.sh" n glrt-x "a,b"
    assert_eq "$flavour tagged with glrt- token: exit 2" 2 "$RC"
    assert_contains "$flavour tagged with glrt- token: explains" "are set in GitLab" "$ERR"
    assert_eq "$flavour tagged with glrt- token: nothing run" "" "$(calls)"

    # --- unregister_runner.sh NAME ---
    : >"$FAKE_LOG"
    run_with_fakes "$RUNNER_DIR/unregister_runner.sh" runner01
    assert_eq "$flavour unregister: exit 0" 0 "$RC"
    assert_eq "$flavour unregister: command" "$C exec -T gitlab-runner gitlab-runner unregister --name runner01" "$(calls)"
    for bad in "" "''" "a b"; do
        : >"$FAKE_LOG"
        eval "run_with_fakes \"\$RUNNER_DIR/unregister_runner.sh\" $bad"
        assert_eq "$flavour unregister [$bad]: exit 2" 2 "$RC"
        assert_contains "$flavour unregister [$bad]: usage" "usage: unregister_runner.sh RUNNER_NAME" "$ERR"
        assert_eq "$flavour unregister [$bad]: nothing run" "" "$(calls)"
    done

    # --- login.sh REGISTRY: docker login with a throw-away config whose credsStore forwards the
    # helper protocol into the regauth container's docker-credential-file.
    : >"$FAKE_LOG"
    : >"$FAKE_STDIN"
    run_with_fakes "$RUNNER_DIR/login.sh" registry.example.com:5000 --username bob
    assert_eq "$flavour login: exit 0" 0 "$RC"
    expected="docker login registry.example.com:5000 --username bob
DOCKER_CONFIG credsStore=regauth-compose
$C -f $RUNNER_DIR/docker-compose.yml exec -T regauth docker-credential-file store"
    assert_eq "$flavour login: docker login, then store forwarded into the regauth container" "$expected" "$(calls)"
    assert_eq "$flavour login: the helper payload reaches the container on stdin" \
        '{"ServerURL":"registry.example.com:5000","Username":"fake-user","Secret":"fake-secret"}' "$(cat "$FAKE_STDIN")"

    : >"$FAKE_LOG"
    run_with_fakes "$RUNNER_DIR/login.sh" --logout registry.example.com:5000
    assert_eq "$flavour logout: exit 0" 0 "$RC"
    assert_contains "$flavour logout: erase forwarded" "exec -T regauth docker-credential-file erase" "$(calls)"
    for bad in "" "--username" "--logout" "'--logout a b'"; do
        : >"$FAKE_LOG"
        eval "run_with_fakes \"\$RUNNER_DIR/login.sh\" $bad"
        assert_eq "$flavour login [$bad]: exit 2" 2 "$RC"
        assert_contains "$flavour login [$bad]: usage" "usage: login.sh REGISTRY" "$ERR"
        assert_eq "$flavour login [$bad]: nothing run" "" "$(calls)"
    done

    # COMPOSE overrides the detection.
    # (run_with_fakes unsets COMPOSE on purpose, to test the detection; call directly here.)
    : >"$FAKE_LOG"
    set +e
    PATH="$FAKE_PATH" COMPOSE="$C --project-name ci" "$RUNNER_DIR/unregister_runner.sh" x </dev/null
    RC=$?
    set -e
    assert_eq "$flavour COMPOSE override: exit 0" 0 "$RC"
    assert_eq "$flavour COMPOSE override" "$C --project-name ci exec -T gitlab-runner gitlab-runner unregister --name x" "$(calls)"
    rm -rf "$FAKE_DIR"
done
FAKE_DIR=
finish
