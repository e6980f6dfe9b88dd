#!/usr/bin/env bash
# Benchmark: pulling one image (a SIZE_MB random layer) with skopeo directly from a loopback CNCF
# registry, through a cold `regauth proxy` (empty cache) and through a warm one. Prints a table
# with mean wall time, the ratio to the direct pull, and upstream registry requests per pull
# (counted in the registry's access log). Not a test: no assertions.
#
#   bash benches/proxy_pull.sh            # SIZE_MB=64 RUNS=3, uses target/debug/regauth
#   REGAUTH=target/release/regauth SIZE_MB=256 RUNS=5 bash benches/proxy_pull.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
REGAUTH=${REGAUTH:-$ROOT/target/debug/regauth}
SIZE_MB=${SIZE_MB:-64}
RUNS=${RUNS:-3}
W=$(mktemp -d /tmp/regauth-bench.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$W"; }
trap cleanup EXIT
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 200); do curl -s -o /dev/null "$1" && return 0; sleep 0.05; done; echo "no answer from $1" >&2; exit 1; }
now() { date +%s.%N; }

# 1. Image: OCI layout with one gzip'd tar of SIZE_MB random bytes.
mkdir -p "$W/img/blobs/sha256" "$W/rootfs"
head -c "$((SIZE_MB << 20))" /dev/urandom > "$W/rootfs/data"
tar -C "$W/rootfs" -cf "$W/layer.tar" data
gzip -1 -c "$W/layer.tar" > "$W/layer.tar.gz"
python3 - "$W" <<'PY'
import hashlib, json, os, shutil, sys
w = sys.argv[1]; b = os.path.join(w, "img", "blobs", "sha256")
def put(data):
    h = hashlib.sha256(data).hexdigest(); open(os.path.join(b, h), "wb").write(data); return "sha256:" + h
diff = "sha256:" + hashlib.sha256(open(os.path.join(w, "layer.tar"), "rb").read()).hexdigest()
layer = open(os.path.join(w, "layer.tar.gz"), "rb").read(); ld = put(layer)
cfg = json.dumps({"architecture": "amd64", "os": "linux", "config": {}, "rootfs": {"type": "layers", "diff_ids": [diff]}}).encode(); cd = put(cfg)
man = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": len(cfg)},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": ld, "size": len(layer)}]}).encode()
md = put(man)
json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": len(man),
    "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}, open(os.path.join(w, "img", "index.json"), "w"))
open(os.path.join(w, "img", "oci-layout"), "w").write('{"imageLayoutVersion":"1.0.0"}')
PY

# 2. Registry.
RP=$(port)
cat > "$W/reg.yml" <<YML
version: 0.1
log: {level: info}
storage: {filesystem: {rootdirectory: $W/regdata}}
http: {addr: 127.0.0.1:$RP, secret: bench}
YML
docker-registry serve "$W/reg.yml" > "$W/reg.log" 2>&1 & PIDS+=($!)
wait_http "http://127.0.0.1:$RP/v2/"
skopeo --insecure-policy copy -q --dest-tls-verify=false "oci:$W/img:latest" "docker://127.0.0.1:$RP/bench/img:latest"

PP=$(port)
start_proxy() {
  "$REGAUTH" proxy --listen "127.0.0.1:$PP" --cache-dir "$W/cache" --config-dir "$W/nocfg" \
    --upstream "local=http://127.0.0.1:$RP" > "$W/proxy.log" 2>&1 & PROXY=$!; PIDS+=($PROXY)
  wait_http "http://127.0.0.1:$PP/healthz"
}
stop_proxy() { kill "$PROXY"; wait "$PROXY" 2>/dev/null || true; }
mkdir -p "$W/nocfg"; echo '{}' > "$W/nocfg/config.json"
upstream_requests() { grep -c '"\(GET\|HEAD\) /v2/bench' "$W/reg.log" || true; }
pull() { rm -rf "$W/out"; skopeo --insecure-policy copy -q --src-tls-verify=false "docker://$1" "oci:$W/out:latest"; }

declare -A T R
for case in direct cold warm; do T[$case]=0; R[$case]=0; done
start_proxy
for i in $(seq "$RUNS"); do
  b=$(upstream_requests); s=$(now); pull "127.0.0.1:$RP/bench/img:latest"; e=$(now)
  T[direct]=$(echo "${T[direct]} + $e - $s" | bc); R[direct]=$(( R[direct] + $(upstream_requests) - b ))
  stop_proxy; rm -rf "$W/cache"; start_proxy
  b=$(upstream_requests); s=$(now); pull "127.0.0.1:$PP/local/bench/img:latest"; e=$(now)
  T[cold]=$(echo "${T[cold]} + $e - $s" | bc); R[cold]=$(( R[cold] + $(upstream_requests) - b ))
  b=$(upstream_requests); s=$(now); pull "127.0.0.1:$PP/local/bench/img:latest"; e=$(now)
  T[warm]=$(echo "${T[warm]} + $e - $s" | bc); R[warm]=$(( R[warm] + $(upstream_requests) - b ))
done
printf '\nskopeo copy of a %d MiB layer image, %d runs each (%s)\n' "$SIZE_MB" "$RUNS" "$(basename "$REGAUTH")"
printf '%-28s %10s %12s %22s\n' case "mean s" "vs direct" "upstream req / pull"
for case in direct cold warm; do
  m=$(echo "scale=3; ${T[$case]} / $RUNS" | bc); d=$(echo "scale=3; ${T[direct]} / $RUNS" | bc)
  printf '%-28s %10s %11sx %22s\n' "$case$( [ $case = direct ] && echo ' (registry)' || echo ' (via proxy)')" "$m" "$(echo "scale=2; $m / $d" | bc)" "$(echo "scale=1; ${R[$case]} / $RUNS" | bc)"
done
