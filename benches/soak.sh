#!/usr/bin/env bash
# Soak (a bench mode, bounded, loopback; not a test and not in CI): SOAK_SECS (default 600) of mixed
# pulls through `regauth proxy` — whole GETs (hash-checked), cold and warm Ranges, HEADs, manifests,
# and clients that abort mid-body — against a CNCF registry behind a relay that resets its
# connections mid-body about once per CUT_MIB relayed (benches/support/flaky_relay.py, default 64). A small
# --cache-max-size keeps evicting, so cold downloads (and upstream failures) go on all the time.
#
#   bash benches/soak.sh                         # 10 minutes, target/release/regauth if built
#   SOAK_SECS=150 REGAUTH=target/debug/regauth bash benches/soak.sh
#
# Prints, every SAMPLE_SECS (10): elapsed s, proxy RSS MiB, open descriptors (/proc/PID/fd), files in
# the cache's tmp/, requests ok / failed / aborted, and at the end: the same after the load stopped,
# tmp/ after a clean shutdown, complete 200s whose bytes did not match the digest (must be 0), and
# `regauth cache verify`. Exit status 1 if a wrong complete blob was seen or verify failed.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SOAK_SECS=${SOAK_SECS:-600}
SAMPLE_SECS=${SAMPLE_SECS:-10}
WORKERS=${WORKERS:-8}
CUT_MIB=${CUT_MIB:-64}
if [ -z "${REGAUTH:-}" ]; then
  REGAUTH=$ROOT/target/release/regauth
  [ -x "$REGAUTH" ] || REGAUTH=$ROOT/target/debug/regauth
fi
W=$(mktemp -d "${TMPDIR:-/tmp}/regauth-soak.XXXXXX")
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$W"; }
trap cleanup EXIT
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 300); do curl -s -o /dev/null "$1" && return 0; sleep 0.05; done; echo "no answer from $1" >&2; exit 1; }

# Upstream: an anonymous CNCF registry with 12 blobs (1-24 MiB) and a manifest, behind the relay.
RP=$(port); FP=$(port); PP=$(port)
cat > "$W/reg.yml" <<YML
version: 0.1
log: {level: warn, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $W/regdata}}
http: {addr: 127.0.0.1:$RP, secret: soak}
YML
docker-registry serve "$W/reg.yml" > "$W/reg.log" 2>&1 & PIDS+=($!)
wait_http "http://127.0.0.1:$RP/v2/"
mkdir -p "$W/blobs"
: > "$W/digests"
for mb in 1 2 3 4 6 8 10 12 16 20 24 24; do
  f="$W/blobs/$mb.$RANDOM"; head -c $((mb << 20)) /dev/urandom > "$f"
  d="sha256:$(sha256sum "$f" | cut -d' ' -f1)"
  loc=$(curl -sf -X POST -D - -o /dev/null "http://127.0.0.1:$RP/v2/soak/img/blobs/uploads/" | tr -d '\r' | sed -n 's/^[Ll]ocation: //p')
  case $loc in http*) ;; *) loc="http://127.0.0.1:$RP$loc" ;; esac
  curl -sf -X PUT -H 'Content-Type: application/octet-stream' -T "$f" -o /dev/null "$loc&digest=$d"
  echo "$d $((mb << 20))" >> "$W/digests"
  rm -f "$f"
done
python3 - "$W" <<'PY'
import json, sys
w = sys.argv[1]
layers = [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": int(n)}
          for d, n in (l.split() for l in open(w + "/digests"))]
cfg = layers[0]
open(w + "/man.json", "w").write(json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg["digest"], "size": cfg["size"]},
    "layers": layers[1:]}))
PY
curl -sf -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' --data-binary @"$W/man.json" \
  -o /dev/null "http://127.0.0.1:$RP/v2/soak/img/manifests/latest"
python3 "$ROOT/benches/support/flaky_relay.py" "$FP" "$RP" "$CUT_MIB" > "$W/relay.log" 2>&1 & RELAY=$!; PIDS+=($RELAY)
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$FP/v2/" && break; sleep 0.05; done

mkdir -p "$W/cfg"; echo '{}' > "$W/cfg/config.json"
"$REGAUTH" proxy --listen "127.0.0.1:$PP" --cache-dir "$W/cache" --config-dir "$W/cfg" \
  --upstream "up=http://127.0.0.1:$FP" --cache-max-size 48M --tag-ttl 5 --log-level warn > "$W/proxy.log" 2>&1 & PROXY=$!; PIDS+=($PROXY)
wait_http "http://127.0.0.1:$PP/healthz"
BASE="http://127.0.0.1:$PP/v2/up/soak/img"
mapfile -t BLOBS < "$W/digests"

# One worker: random requests until the deadline; one line per request in its log.
worker() {
  local id=$1 end=$2 out="$W/w$1.body" log="$W/w$1.log"
  while [ "$(date +%s)" -lt "$end" ]; do
    local pick=${BLOBS[RANDOM % ${#BLOBS[@]}]} d n r
    d=${pick% *}; n=${pick#* }
    r=$((RANDOM % 10))
    if [ "$r" -lt 4 ]; then # whole GET, hash-checked when complete
      read -r code size < <(curl -s --max-time 60 -o "$out" -w '%{http_code} %{size_download}\n' "$BASE/blobs/$d" || echo "000 0")
      if [ "$code" = 200 ] && [ "$size" = "$n" ]; then
        if [ "sha256:$(sha256sum "$out" | cut -d' ' -f1)" = "$d" ]; then echo ok; else echo WRONG; fi
      else echo "fail $code"; fi >> "$log"
    elif [ "$r" -lt 6 ]; then # client abort mid-body
      timeout -s KILL "0.0$((RANDOM % 9 + 1))" curl -s -o /dev/null "$BASE/blobs/$d" || true
      echo aborted >> "$log"
    elif [ "$r" -lt 8 ]; then # Range: the first 64 KiB, or the last 4 KiB
      local range="bytes=0-65535" want=65536
      [ $((RANDOM % 2)) = 0 ] && { range="bytes=-4096"; want=4096; }
      read -r code size < <(curl -s --max-time 60 -o /dev/null -H "Range: $range" -w '%{http_code} %{size_download}\n' "$BASE/blobs/$d" || echo "000 0")
      if [ "$code" = 206 ] && [ "$size" = "$want" ]; then echo ok; else echo "fail $code"; fi >> "$log"
    elif [ "$r" -lt 9 ]; then
      code=$(curl -s --max-time 60 -I -o /dev/null -w '%{http_code}' "$BASE/blobs/$d" || echo 000)
      if [ "$code" = 200 ]; then echo ok; else echo "fail $code"; fi >> "$log"
    else
      code=$(curl -s --max-time 60 -o /dev/null -w '%{http_code}' -H 'Accept: application/vnd.oci.image.manifest.v1+json' "$BASE/manifests/latest" || echo 000)
      if [ "$code" = 200 ]; then echo ok; else echo "fail $code"; fi >> "$log"
    fi
  done
}
count() { cat "$W"/w*.log 2>/dev/null | grep -c "^$1" || true; }
sample() {
  local rss fds tmp
  rss=$(awk '/VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$PROXY/status")
  fds=$(find "/proc/$PROXY/fd" -mindepth 1 -maxdepth 1 | wc -l)
  tmp=$(find "$W/cache/tmp" -type f 2>/dev/null | wc -l)
  printf '%8s %8s %6s %6s %8s %8s %8s\n' "$1" "$rss" "$fds" "$tmp" "$(count ok)" "$(count fail)" "$(count aborted)"
}

START=$(date +%s); END=$((START + SOAK_SECS))
printf '%8s %8s %6s %6s %8s %8s %8s\n' "t s" "RSS MiB" fds tmp/ ok failed aborted
sample 0
for i in $(seq "$WORKERS"); do worker "$i" "$END" 2>/dev/null & PIDS+=($!); done
while [ "$(date +%s)" -lt "$END" ]; do
  sleep "$SAMPLE_SECS"
  sample "$(( $(date +%s) - START ))"
done
for p in "${PIDS[@]:3}"; do wait "$p" 2>/dev/null || true; done
sleep 5 # downloads that lost their client finish for the cache
echo "after the load stopped:"
sample "$(( $(date +%s) - START ))"
WRONG=$(count WRONG)
kill -TERM "$PROXY"; wait "$PROXY" 2>/dev/null || true
TMP_AFTER=$(find "$W/cache/tmp" -type f 2>/dev/null | wc -l)
kill -TERM "$RELAY"; wait "$RELAY" 2>/dev/null || true
echo "relay: $(cat "$W/relay.log") upstream connections, reset mid-body"
echo "tmp/ files after shutdown: $TMP_AFTER"
echo "complete 200s with wrong bytes: $WRONG"
echo "proxy warnings/errors logged: $(grep -c . "$W/proxy.log" || true) lines; panics: $(grep -c panicked "$W/proxy.log" || true)"
if "$REGAUTH" cache verify --cache-dir "$W/cache" > "$W/verify.out" 2>&1; then VERIFY=clean; else VERIFY=FAILED; fi
echo "regauth cache verify: $VERIFY ($(tail -n 1 "$W/verify.out"))"
[ "$WRONG" = 0 ] && [ "$VERIFY" = clean ]
