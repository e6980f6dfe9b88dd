#!/usr/bin/env bash
# packaging/systemd/regauth-proxy.service passes `systemd-analyze verify` (with ExecStart pointed at
# the freshly built binary) and carries the hardening the issue asks for.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

unit="$REPO_ROOT/packaging/systemd/regauth-proxy.service"
bin="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/debug/regauth"
[[ -x "$bin" ]] || { fail "build first: $bin missing"; finish; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sed "s|/usr/bin/regauth|$bin|" "$unit" >"$tmp/regauth-proxy.service"
# Man pages are not installed here; everything else must verify cleanly.
out=$(systemd-analyze verify "$tmp/regauth-proxy.service" 2>&1 | grep -v "Command 'man " || true)
assert_eq "systemd-analyze verify is clean" "" "$out"

for want in "DynamicUser=yes" "ProtectSystem=strict" "StateDirectory=regauth" "CacheDirectory=regauth" \
    "ConfigurationDirectory=regauth" "NoNewPrivileges=yes" "CapabilityBoundingSet=" "PrivateTmp=yes" \
    "ProtectHome=yes" "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX" "SystemCallFilter=@system-service" \
    "Environment=REGAUTH_CONFIG_DIR=/var/lib/regauth" "Environment=XDG_CACHE_HOME=/var/cache" \
    "EnvironmentFile=-/etc/regauth/proxy.env" "Environment=REGAUTH_LISTEN=127.0.0.1:5000"; do
    if grep -qxF "$want" "$unit"; then pass "$want"; else fail "unit lacks $want"; fi
done
# shellcheck disable=SC2016  # a literal systemd ${VAR}
assert_contains "ExecStart runs the proxy on \$REGAUTH_LISTEN with the cache dir" \
    'ExecStart=/usr/bin/regauth proxy --listen ${REGAUTH_LISTEN} --cache-dir /var/cache/regauth' "$(cat "$unit")"
# The env file the package ships as a conffile keeps the loopback default.
assert_contains "proxy.env default listen" "REGAUTH_LISTEN=127.0.0.1:5000" "$(cat "$REPO_ROOT/packaging/systemd/proxy.env")"
finish
