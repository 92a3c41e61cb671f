#!/usr/bin/env bash
# Soak: wrk on the server's hot endpoints for SECONDS (default 600) against
# one release baas-server on the embedded default (SQLite + chunk dir),
# loopback only. The load mixes, per request in turn: an agent polling for
# its next job (its machine token), a user listing an image's versions, the
# manifest of a version, and a 4 KiB range of its content. Every INTERVAL
# seconds (default 60) it prints requests per second, p50/p99 latency,
# non-2xx answers and the server's RSS. The bound: RSS at the end at most
# 16 MiB above RSS after the first interval (the warm-up: worker threads,
# connection buffers, the allocator's arenas); it fails beyond that.
#   benches/soak.sh [SECONDS] [INTERVAL]
# Installs wrk and jq with apt-get when missing (root).
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_TOTAL="${1:-600}"; INTERVAL="${2:-60}"
for tool in wrk curl jq; do
  command -v "$tool" >/dev/null || { apt-get install -y -qq "$tool" >/dev/null 2>&1 || true; }
  command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done
cargo build --release -q -p baas-server
BIN=target/release/baas-server
work=$(mktemp -d); spid=""
cleanup() { [ -n "$spid" ] && kill "$spid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
"$BIN" --data-dir "$work/data" --bind 127.0.0.1 --port "$port" 2>"$work/server.log" &
spid=$!
for _ in $(seq 100); do curl -sf "$base/healthz" >/dev/null && break; sleep 0.1; done
TOKEN=$(cat "$work/data/admin-token")
auth=(-H "Authorization: Bearer $TOKEN")
json=(-H 'Content-Type: application/json')

# An image with one 64 MiB version (random quarter, zeros elsewhere), a
# machine and its agent token.
img=$(curl -sS "${auth[@]}" "${json[@]}" -X POST "$base/api/v1/images" \
  -d '{"name": "soak", "size": 67108864}' | jq -r .image.id)
truncate -s 64M "$work/disk.img"
dd if=/dev/urandom of="$work/disk.img" bs=1M count=16 conv=notrunc status=none
curl -sS -o /dev/null "${auth[@]}" -X POST -T "$work/disk.img" \
  -H 'Content-Type: application/octet-stream' "$base/api/v1/images/$img/versions"
mid=$(curl -sS "${auth[@]}" "${json[@]}" -X POST "$base/api/v1/machines" \
  -d '{"mac": "52:54:00:50:a4:01", "name": "soak", "arch": "x86_64"}' | jq -r '.id // .machine.id')
atoken=$(curl -sS "${auth[@]}" -X POST "$base/api/v1/machines/$mid/agent-token" | jq -r '.secret // .token')

paths=("/api/v1/agent/machines/$mid/next-job?wait_ms=0" "/api/v1/images/$img/versions"
  "/api/v1/images/$img/versions/latest/manifest" "/api/v1/images/$img/versions/latest/content")
for p in "${paths[@]}"; do # every endpoint answers 2xx before the load starts
  t=$TOKEN; [[ $p == */agent/* ]] && t=$atoken
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $t" -r 0-4095 "$base$p")
  [[ $code == 2* ]] || { echo "$p answered $code" >&2; exit 1; }
done
cat >"$work/mix.lua" <<LUA
local reqs = {
  wrk.format("GET", "${paths[0]}", { ["Authorization"] = "Bearer $atoken" }),
  wrk.format("GET", "${paths[1]}", { ["Authorization"] = "Bearer $TOKEN" }),
  wrk.format("GET", "${paths[2]}", { ["Authorization"] = "Bearer $TOKEN" }),
  wrk.format("GET", "${paths[3]}", { ["Authorization"] = "Bearer $TOKEN", ["Range"] = "bytes=0-4095" }),
}
local i = 0
request = function() i = i % #reqs + 1; return reqs[i] end
LUA

rss() { awk '/VmRSS/ { print int($2 / 1024) }' "/proc/$spid/status"; }
start_rss=$(rss)
echo "| interval | req/s | p50 | p99 | non-2xx | RSS MiB |"
echo "|---:|---:|---:|---:|---:|---:|"
elapsed=0; n=0
while [ "$elapsed" -lt "$SECONDS_TOTAL" ]; do
  out=$(wrk -t2 -c32 -d"${INTERVAL}s" --latency -s "$work/mix.lua" "$base")
  n=$((n + 1)); elapsed=$((elapsed + INTERVAL))
  rps=$(awk '/Requests\/sec/ { print int($2) }' <<<"$out")
  p50=$(awk '$1 == "50%" { print $2 }' <<<"$out")
  p99=$(awk '$1 == "99%" { print $2 }' <<<"$out")
  bad=$(awk '/Non-2xx/ { print $NF }' <<<"$out"); bad=${bad:-0}
  now=$(rss); [ "$n" -eq 1 ] && warm_rss=$now
  echo "| $n | $rps | $p50 | $p99 | $bad | $now |"
done
end_rss=$(rss)
echo
echo "server RSS: ${start_rss} MiB idle, ${warm_rss} MiB after the first ${INTERVAL} s, ${end_rss} MiB after ${SECONDS_TOTAL} s (bound: $((warm_rss + 16)) MiB)"
[ "$end_rss" -le $((warm_rss + 16)) ] || { echo "RSS grew beyond the bound" >&2; exit 1; }
