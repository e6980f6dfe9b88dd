#!/usr/bin/env bash
# Benchmark (not a test; no assertions on numbers): regauth proxy vs the CNCF registry in proxy mode
# (`proxy.remoteurl`) vs nginx serving the same blob file with sendfile — one run, side by side on
# loopback. The upstream is a CNCF registry with token auth (tests/peers/tokenserver.py), holding a
# 64 MiB random blob, a 1 GiB generated blob and a manifest.
#
#   bash benches/peers.sh                           # builds and uses target/release/regauth
#   REGAUTH=target/debug/regauth bash benches/peers.sh
#   N=20 STREAMS_1G=50 SKIP_1G=1 bash benches/peers.sh
#   BENCH_ROWS="warm" BENCH_SERVERS="g n" bash benches/peers.sh   # a quick subset, regauth vs nginx
#
# BENCH_ROWS (default all of them): cold (cold GET, N concurrent cold GETs), warm (1 and 8
# streams), manifest (warm manifest requests/s), coldmanifest (1,000 concurrent cold manifest
# GETs, by tag and by digest, on a fresh cache), 1g (STREAMS_1G × 1 GiB). BENCH_SERVERS (default
# "g x n"): g = regauth, x = the registry's proxy mode, n = nginx. A subset run writes
# benches/results/peers-<date>-subset.md, never the full run's file.
#
# Rows (every answer is checked: status 200 and the exact length, else the script stops):
#   cold GET of the 64 MiB blob: wall time and time to first byte (fresh cache)
#   N concurrent cold GETs (fresh cache): upstream bytes per blob (from the upstream registry's
#     access log) and wall time
#   warm GET MB/s, 1 stream (16 sequential GETs) and 8 parallel streams (8 × 8 GETs)
#   manifest (by digest) requests/s, h2load --h1 with 1,000 concurrent connections, 20,000 requests
#   1,000 concurrent cold manifest GETs (h2load, one request per connection, fresh cache), by tag
#     and by digest: answers that were not a 200, and the manifest GETs the upstream saw
#   peak RSS (VmHWM of the server, nginx: its processes summed) over the rows above, and — reset
#     with /proc/PID/clear_refs — during STREAMS_1G concurrent GETs of the 1 GiB blob
# Prints a table with the ratios and writes it to benches/results/peers-<date>.md.
# Installs its peers if missing: nginx, nghttp2-client (h2load), docker-registry (apt).
# Disk: about 4 GiB under $TMPDIR while it runs.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
N=${N:-20}
STREAMS_1G=${STREAMS_1G:-50}
SKIP_1G=${SKIP_1G:-}
ROWS=" ${BENCH_ROWS:-cold warm manifest coldmanifest 1g} "
SERVERS=" ${BENCH_SERVERS:-g x n} "
want() { [[ $ROWS == *" $1 "* ]]; }
serves() { [[ $SERVERS == *" $1 "* ]]; }
[ -n "${BENCH_ROWS:-}${BENCH_SERVERS:-}" ] && SUBSET=1 || SUBSET=
want 1g || SKIP_1G=1
PY=${PY:-$ROOT/.venv-moto/bin/python}
if [ -z "${REGAUTH:-}" ]; then
  (cd "$ROOT" && cargo build --release -q -p regauth --bin regauth)
  REGAUTH=$ROOT/target/release/regauth
fi
need=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v h2load >/dev/null || need+=(nghttp2-client)
command -v docker-registry >/dev/null || need+=(docker-registry)
if [ ${#need[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

W=$(mktemp -d "${TMPDIR:-/tmp}/regauth-peers.XXXXXX")
chmod 755 "$W" # nginx's worker (nobody) must be able to read the files it serves
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  [ -f "$W/nginx.pid" ] && kill "$(cat "$W/nginx.pid")" 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 300); do curl -s -o /dev/null "$1" && return 0; sleep 0.05; done; echo "no answer from $1" >&2; exit 1; }
now() { date +%s.%N; }

# 1. Blobs and manifest (OCI layout for skopeo).
echo "# generating blobs" >&2
mkdir -p "$W/img/blobs/sha256"
head -c $((64 << 20)) /dev/urandom > "$W/b64"
if [ -z "$SKIP_1G" ]; then
  # Generated, not random: 1 GiB of a repeated 1 MiB random block (fast to make, not compressible).
  head -c $((1 << 20)) /dev/urandom > "$W/blk"
  for _ in $(seq 1024); do cat "$W/blk"; done > "$W/b1g"
  rm -f "$W/blk"
fi
"$PY" - "$W" "$SKIP_1G" <<'PY'
import hashlib, json, os, sys
w, skip = sys.argv[1], sys.argv[2]
b = os.path.join(w, "img", "blobs", "sha256")
def digest_file(p):
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for c in iter(lambda: f.read(1 << 20), b""): h.update(c)
    return h.hexdigest()
layers = []
for name in (["b64"] if skip else ["b64", "b1g"]):
    p = os.path.join(w, name); h = digest_file(p)
    os.link(p, os.path.join(b, h))
    layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": "sha256:" + h, "size": os.path.getsize(p)})
    open(os.path.join(w, name + ".digest"), "w").write("sha256:" + h)
cfg = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                  "rootfs": {"type": "layers", "diff_ids": [l["digest"] for l in layers]}}).encode()
ch = hashlib.sha256(cfg).hexdigest(); open(os.path.join(b, ch), "wb").write(cfg)
man = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + ch, "size": len(cfg)},
    "layers": layers}).encode()
mh = hashlib.sha256(man).hexdigest(); open(os.path.join(b, mh), "wb").write(man)
open(os.path.join(w, "man.digest"), "w").write("sha256:" + mh)
open(os.path.join(w, "man.len"), "w").write(str(len(man)))
open(os.path.join(w, "man.json"), "wb").write(man)
json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
    "digest": "sha256:" + mh, "size": len(man), "annotations": {"org.opencontainers.image.ref.name": "latest"}}]},
    open(os.path.join(w, "img", "index.json"), "w"))
open(os.path.join(w, "img", "oci-layout"), "w").write('{"imageLayoutVersion":"1.0.0"}')
PY
D64=$(cat "$W/b64.digest"); L64=$((64 << 20))
D1G=$( [ -z "$SKIP_1G" ] && cat "$W/b1g.digest" || true); L1G=$((1 << 30))
MD=$(cat "$W/man.digest"); ML=$(cat "$W/man.len")

# 2. Upstream: CNCF registry + token server (user bench, no anonymous access).
TP=$(port); RP=$(port)
mkdir -p "$W/token"
"$PY" "$ROOT/tests/peers/tokenserver.py" keygen --out-dir "$W/token" >/dev/null
"$PY" "$ROOT/tests/peers/tokenserver.py" serve --port "$TP" --key "$W/token/signer.key" --cert "$W/token/signer.crt" \
  --user bench:benchpw --anonymous none --service bench-registry --issuer bench-issuer > "$W/token.log" 2>&1 & PIDS+=($!)
wait_http "http://127.0.0.1:$TP/healthz"
cat > "$W/up.yml" <<YML
version: 0.1
log: {level: info, accesslog: {disabled: false}}
storage: {filesystem: {rootdirectory: $W/updata}}
http: {addr: 127.0.0.1:$RP, secret: bench}
auth: {token: {realm: "http://127.0.0.1:$TP/token", service: bench-registry, issuer: bench-issuer, rootcertbundle: $W/token/signer.crt}}
YML
docker-registry serve "$W/up.yml" > "$W/up.log" 2>&1 & PIDS+=($!)
wait_http "http://127.0.0.1:$RP/v2/"
echo "# pushing to the upstream" >&2
# Through the registry API, not skopeo: skopeo would gzip the layers (new digests).
TOKEN=$(curl -sf -u bench:benchpw "http://127.0.0.1:$TP/token?service=bench-registry&scope=repository:bench/img:pull,push" \
  | "$PY" -c 'import json,sys;print(json.load(sys.stdin)["token"])')
push_blob() {
  local loc
  loc=$(curl -sf -X POST -H "Authorization: Bearer $TOKEN" -D - -o /dev/null "http://127.0.0.1:$RP/v2/bench/img/blobs/uploads/" \
    | tr -d '\r' | sed -n 's/^[Ll]ocation: //p')
  case $loc in http*) ;; *) loc="http://127.0.0.1:$RP$loc" ;; esac
  curl -sf -X PUT -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/octet-stream' -T "$1" \
    -o /dev/null "$loc&digest=$2"
}
for f in "$W"/img/blobs/sha256/*; do push_blob "$f" "sha256:$(basename "$f")"; done
curl -sf -X PUT -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
  --data-binary @"$W/man.json" -o /dev/null "http://127.0.0.1:$RP/v2/bench/img/manifests/latest"
rm -rf "$W/img"
# Upstream blob bytes sent since a log offset (the registry's combined access log lines).
upstream_bytes() {
  tail -c +"$(( $1 + 1 ))" "$W/up.log" | grep -o "\"GET /v2/bench/img/blobs/$2 HTTP/1.1\" 200 [0-9]*" \
    | awk '{s += $NF} END {print s + 0}'
}
log_size() { stat -c %s "$W/up.log"; }

# 3. The three servers. regauth: credentials for the upstream in a docker config.
GP=$(port); XP=$(port); NP=$(port)
mkdir -p "$W/cfg"; chmod 700 "$W/cfg"
printf '{"auths":{"127.0.0.1:%s":{"auth":"%s"}}}' "$RP" "$(printf bench:benchpw | base64)" > "$W/cfg/config.json"
chmod 600 "$W/cfg/config.json"
start_regauth() {
  rm -rf "$W/rcache"
  "$REGAUTH" proxy --listen "127.0.0.1:$GP" --cache-dir "$W/rcache" --config-dir "$W/cfg" \
    --upstream "up=http://127.0.0.1:$RP" --log-level warn > "$W/regauth.log" 2>&1 & REGAUTH_PID=$!; PIDS+=($REGAUTH_PID)
  wait_http "http://127.0.0.1:$GP/healthz"
}
start_regproxy() {
  rm -rf "$W/xdata"
  cat > "$W/x.yml" <<YML
version: 0.1
log: {level: warn, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $W/xdata}}
http: {addr: 127.0.0.1:$XP, secret: bench}
proxy: {remoteurl: "http://127.0.0.1:$RP", username: bench, password: benchpw}
YML
  docker-registry serve "$W/x.yml" > "$W/x.log" 2>&1 & XPROXY_PID=$!; PIDS+=($XPROXY_PID)
  wait_http "http://127.0.0.1:$XP/v2/"
}
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
# nginx: the same files under the same paths, sendfile on, 2 workers (the machine's cores).
mkdir -p "$W/www/v2/bench/img/blobs" "$W/www/v2/bench/img/manifests" "$W/nginx-tmp"
ln "$W/b64" "$W/www/v2/bench/img/blobs/$D64"
[ -n "$D1G" ] && ln "$W/b1g" "$W/www/v2/bench/img/blobs/$D1G"
cp "$W/man.json" "$W/www/v2/bench/img/manifests/$MD"
chmod -R a+rX "$W/www"
cat > "$W/nginx.conf" <<NGX
worker_processes 2;
pid $W/nginx.pid;
error_log $W/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on; tcp_nopush on;
  client_body_temp_path $W/nginx-tmp; proxy_temp_path $W/nginx-tmp; fastcgi_temp_path $W/nginx-tmp;
  uwsgi_temp_path $W/nginx-tmp; scgi_temp_path $W/nginx-tmp;
  default_type application/octet-stream;
  server { listen 127.0.0.1:$NP; root $W/www; }
}
NGX
"$NGINX" -c "$W/nginx.conf"
wait_http "http://127.0.0.1:$NP/"
nginx_pids() { pgrep -P "$(cat "$W/nginx.pid")"; cat "$W/nginx.pid"; }

BASE_G="http://127.0.0.1:$GP/v2/up/bench/img"
BASE_X="http://127.0.0.1:$XP/v2/bench/img"
BASE_N="http://127.0.0.1:$NP/v2/bench/img"
declare -A R

# One GET: checks 200 and the length; prints "ttfb total".
get() {
  local out; out=$(curl -s -o /dev/null -w '%{http_code} %{size_download} %{time_starttransfer} %{time_total}' "$1")
  set -- $out "$1" "$2"
  if [ "$1" != 200 ] || [ "$2" != "$6" ]; then
    echo "bad answer from $5: status $1, $2 of $6 bytes: $(curl -s "$5" | head -c 300)" >&2
    tail -n 5 "$W"/regauth.log "$W"/x.log >&2 || true
    exit 1
  fi
  echo "$3 $4"
}
# COUNT GETs of URL (length LEN) by STREAMS parallel clients; prints MB/s.
throughput() {
  local url=$1 len=$2 streams=$3 each=$4 s e
  s=$(now)
  local pids=()
  for _ in $(seq "$streams"); do
    ( for _ in $(seq "$each"); do get "$url" "$len" >/dev/null; done ) & pids+=($!)
  done
  local fail=0; for j in "${pids[@]}"; do wait "$j" || fail=1; done
  [ "$fail" = 0 ] || { echo "a throughput stream failed" >&2; exit 1; }
  e=$(now)
  echo "$streams * $each * $len / ($e - $s) / 1000000" | bc -l
}
# N concurrent cold GETs; prints "wall upstream_bytes_per_blob".
cold_many() {
  local url=$1 before s e; before=$(log_size); s=$(now)
  local pids=()
  for _ in $(seq "$N"); do get "$url" "$L64" >/dev/null & pids+=($!); done
  local fail=0; for j in "${pids[@]}"; do wait "$j" || fail=1; done
  [ "$fail" = 0 ] || { echo "a cold pull failed" >&2; exit 1; }
  e=$(now); sleep 1
  echo "$(echo "$e - $s" | bc -l) $(echo "$(upstream_bytes "$before" "$D64") / $L64" | bc -l)"
}
manifests() {
  # Warmed first: the row is the cached answer rate.
  curl -sf -o /dev/null -H 'Accept: application/vnd.oci.image.manifest.v1+json' "$1/manifests/$MD"
  local out; out=$(h2load --h1 -c 1000 -n 20000 -H 'Accept: application/vnd.oci.image.manifest.v1+json' "$1/manifests/$MD" 2>&1)
  local two; two=$(echo "$out" | sed -n 's/^status codes: \([0-9]*\) 2xx.*/\1/p')
  # Printed with the rate: requests that did not get a 200 (errored connections, non-2xx).
  echo "$(echo "$out" | sed -n 's/^finished in .*, \([0-9.]*\) req\/s.*/\1/p') $(( 20000 - ${two:-0} ))"
  echo "$out" > "$W/h2load-$(date +%s%N).log"
}
hwm_kb() { local t=0; for p in "$@"; do t=$(( t + $(awk '/VmHWM/ {print $2}' "/proc/$p/status") )); done; echo "$t"; }

# 1,000 concurrent GETs of a manifest nobody asked for before (fresh cache); prints "non200
# upstream_gets".
cold_manifests() {
  local url=$1 ref=$2 before; before=$(log_size)
  local out; out=$(h2load --h1 -c 1000 -n 1000 -H 'Accept: application/vnd.oci.image.manifest.v1+json' "$url/manifests/$ref" 2>&1)
  local two; two=$(echo "$out" | sed -n 's/^status codes: \([0-9]*\) 2xx.*/\1/p')
  sleep 1
  local gets; gets=$(tail -c +"$(( before + 1 ))" "$W/up.log" | grep -c "\"GET /v2/bench/img/manifests/$ref HTTP/1.1\" 200" || true)
  echo "$(( 1000 - ${two:-0} )) $gets"
  echo "$out" > "$W/h2load-cold-$(date +%s%N).log"
}

serves g && start_regauth
serves x && start_regproxy
if want cold; then
  echo "# cold" >&2
  if serves g; then
    stop "$REGAUTH_PID"; start_regauth
    read -r R[g_ttfb] R[g_cold] < <(get "$BASE_G/blobs/$D64" "$L64")
    stop "$REGAUTH_PID"; start_regauth
    read -r R[g_nwall] R[g_nbytes] < <(cold_many "$BASE_G/blobs/$D64")
  fi
  if serves x; then
    stop "$XPROXY_PID"; start_regproxy
    read -r R[x_ttfb] R[x_cold] < <(get "$BASE_X/blobs/$D64" "$L64")
    stop "$XPROXY_PID"; start_regproxy
    read -r R[x_nwall] R[x_nbytes] < <(cold_many "$BASE_X/blobs/$D64")
  fi
fi
if want coldmanifest; then
  echo "# 1,000 cold manifest GETs" >&2
  for s in g x; do
    serves $s || continue
    base=BASE_${s^^}; base=${!base}
    for ref in latest "$MD"; do
      if [ $s = g ]; then stop "$REGAUTH_PID"; start_regauth; else stop "$XPROXY_PID"; start_regproxy; fi
      k=tag; [ "$ref" = latest ] || k=dig
      read -r R[${s}_cm${k}] R[${s}_cm${k}up] < <(cold_manifests "$base" "$ref")
    done
  done
fi

echo "# warm" >&2
for s in g x n; do
  serves $s || continue
  base=BASE_${s^^}; base=${!base}
  get "$base/blobs/$D64" "$L64" >/dev/null
  if want warm; then
    R[${s}_w1]=$(throughput "$base/blobs/$D64" "$L64" 1 16)
    R[${s}_w8]=$(throughput "$base/blobs/$D64" "$L64" 8 8)
  fi
  if want manifest; then
    read -r R[${s}_man] R[${s}_manerr] < <(manifests "$base")
  fi
done
serves g && R[g_rss]=$(hwm_kb "$REGAUTH_PID")
serves x && R[x_rss]=$(hwm_kb "$XPROXY_PID")
# shellcheck disable=SC2046
R[n_rss]=$(hwm_kb $(nginx_pids))
if [ -n "$D1G" ]; then
  echo "# $STREAMS_1G x 1 GiB" >&2
  for s in g x n; do
    serves $s || continue
    base=BASE_${s^^}; base=${!base}
    get "$base/blobs/$D1G" "$L1G" >/dev/null # cold for the proxies
    # Peak RSS of this phase alone: `5 > clear_refs` resets VmHWM to the current RSS.
    case $s in g) pids=$REGAUTH_PID ;; x) pids=$XPROXY_PID ;; n) pids=$(nginx_pids) ;; esac
    for p in $pids; do echo 5 > "/proc/$p/clear_refs"; done
    R[${s}_w1g]=$(throughput "$base/blobs/$D1G" "$L1G" "$STREAMS_1G" 1)
    # shellcheck disable=SC2086
    R[${s}_rss1g]=$(hwm_kb $pids)
  done
fi

ratio() { if [ -n "$1" ] && [ -n "$2" ] && [ "$(echo "$2 > 0" | bc -l)" = 1 ]; then printf '%.2f×' "$(echo "$1 / $2" | bc -l)"; else echo "–"; fi; }
row() { printf '| %s | %s | %s | %s | %s | %s |\n' "$1" "$2" "$3" "$4" "$5" "$6"; }
# Rows and servers not measured (a subset run) print as "–".
for k in g_cold x_cold g_ttfb x_ttfb g_nwall x_nwall g_nbytes x_nbytes g_w1 x_w1 n_w1 g_w8 x_w8 n_w8 \
  g_w1g x_w1g n_w1g g_man x_man n_man g_manerr x_manerr n_manerr g_rss x_rss n_rss g_rss1g x_rss1g n_rss1g \
  g_cmtag x_cmtag g_cmtagup x_cmtagup g_cmdig x_cmdig g_cmdigup x_cmdigup; do
  R[$k]=${R[$k]:-}
done
fmt() { if [ -n "$1" ]; then printf '%.3f' "$1"; else echo "–"; fi; }
mb() { if [ -n "$1" ]; then printf '%.0f' "$1"; else echo "–"; fi; }
mib() { if [ -n "$1" ]; then echo $(( $1 / 1024 )); else echo "–"; fi; }
num() { echo "${1:-–}"; }
p2() { if [ -n "$1" ]; then printf '%.2f' "$1"; else echo "–"; fi; }
{
  echo "regauth ($(basename "$(dirname "$REGAUTH")") build) vs the CNCF registry $(docker-registry --version 2>/dev/null | awk '{print $NF}') in proxy mode vs nginx $("$NGINX" -v 2>&1 | sed 's/.*\///') (sendfile), loopback, $(nproc) cores, $(date -u +%Y-%m-%d)."
  echo "Ratios: regauth ÷ the peer (for times and RSS lower is better, for MB/s and req/s higher is better)."
  echo
  row metric regauth "registry proxy" nginx "regauth / registry" "regauth / nginx"
  row --- --- --- --- --- ---
  row "cold GET 64 MiB, s" "$(fmt "${R[g_cold]}")" "$(fmt "${R[x_cold]}")" – "$(ratio "${R[g_cold]}" "${R[x_cold]}")" –
  row "cold GET 64 MiB, TTFB s" "$(fmt "${R[g_ttfb]}")" "$(fmt "${R[x_ttfb]}")" – "$(ratio "${R[g_ttfb]}" "${R[x_ttfb]}")" –
  row "$N concurrent cold GETs, wall s" "$(fmt "${R[g_nwall]}")" "$(fmt "${R[x_nwall]}")" – "$(ratio "${R[g_nwall]}" "${R[x_nwall]}")" –
  row "$N concurrent cold GETs, upstream bytes / blob" "$(p2 "${R[g_nbytes]}")" "$(p2 "${R[x_nbytes]}")" – "$(ratio "${R[g_nbytes]}" "${R[x_nbytes]}")" –
  row "warm GET MB/s, 1 stream" "$(mb "${R[g_w1]}")" "$(mb "${R[x_w1]}")" "$(mb "${R[n_w1]}")" "$(ratio "${R[g_w1]}" "${R[x_w1]}")" "$(ratio "${R[g_w1]}" "${R[n_w1]}")"
  row "warm GET MB/s, 8 streams" "$(mb "${R[g_w8]}")" "$(mb "${R[x_w8]}")" "$(mb "${R[n_w8]}")" "$(ratio "${R[g_w8]}" "${R[x_w8]}")" "$(ratio "${R[g_w8]}" "${R[n_w8]}")"
  if [ -n "$D1G" ]; then
    row "warm GET MB/s, $STREAMS_1G × 1 GiB" "$(mb "${R[g_w1g]}")" "$(mb "${R[x_w1g]}")" "$(mb "${R[n_w1g]}")" "$(ratio "${R[g_w1g]}" "${R[x_w1g]}")" "$(ratio "${R[g_w1g]}" "${R[n_w1g]}")"
  fi
  row "manifest req/s (1,000 connections, 20,000 requests)" "$(mb "${R[g_man]}")" "$(mb "${R[x_man]}")" "$(mb "${R[n_man]}")" "$(ratio "${R[g_man]}" "${R[x_man]}")" "$(ratio "${R[g_man]}" "${R[n_man]}")"
  row "manifest requests without a 200 (of 20,000)" "$(num "${R[g_manerr]}")" "$(num "${R[x_manerr]}")" "$(num "${R[n_manerr]}")" – –
  if want coldmanifest; then
    row "1,000 concurrent cold manifest GETs by tag: answers without a 200" "$(num "${R[g_cmtag]}")" "$(num "${R[x_cmtag]}")" – – –
    row "… by tag: manifest GETs upstream" "$(num "${R[g_cmtagup]}")" "$(num "${R[x_cmtagup]}")" – "$(ratio "${R[g_cmtagup]}" "${R[x_cmtagup]}")" –
    row "1,000 concurrent cold manifest GETs by digest: answers without a 200" "$(num "${R[g_cmdig]}")" "$(num "${R[x_cmdig]}")" – – –
    row "… by digest: manifest GETs upstream" "$(num "${R[g_cmdigup]}")" "$(num "${R[x_cmdigup]}")" – "$(ratio "${R[g_cmdigup]}" "${R[x_cmdigup]}")" –
  fi
  row "peak RSS MiB (VmHWM since the last restart: warm and manifest rows)" "$(mib "${R[g_rss]}")" "$(mib "${R[x_rss]}")" "$(mib "${R[n_rss]}")" "$(ratio "${R[g_rss]}" "${R[x_rss]}")" "$(ratio "${R[g_rss]}" "${R[n_rss]}")"
  if [ -n "$D1G" ]; then
    row "peak RSS MiB during $STREAMS_1G × 1 GiB" "$(mib "${R[g_rss1g]}")" "$(mib "${R[x_rss1g]}")" "$(mib "${R[n_rss1g]}")" "$(ratio "${R[g_rss1g]}" "${R[x_rss1g]}")" "$(ratio "${R[g_rss1g]}" "${R[n_rss1g]}")"
  fi
} > "$W/table.md"
mkdir -p "$ROOT/benches/results"
OUT="$ROOT/benches/results/peers-$(date -u +%Y-%m-%d)${SUBSET:+-subset}.md"
{ echo "# benches/peers.sh"; echo; cat "$W/table.md"; } > "$OUT"
cat "$W/table.md"
echo "written to ${OUT#"$ROOT"/}" >&2
