#!/usr/bin/env bash
# Upload and download throughput of baas-server over loopback, with curl,
# beside curl reading the same file into a sink (the ceiling on this
# machine), and the server's peak RSS during the upload.
#
#   cargo build --release -p baas-server
#   rocket-server/bench/transfer.sh [SIZE_MIB]     # default 2048 (25% data)
#
# Loopback only; stops the server it started.
set -euo pipefail
cd "$(dirname "$0")/../.."
SIZE_MIB="${1:-2048}"
BIN="${BIN:-target/release/baas-server}"
[ -x "$BIN" ] || { echo "build first: cargo build --release -p baas-server" >&2; exit 1; }
work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT

# The image: 4 MiB of random data in every 16 MiB, zeros elsewhere.
img="$work/image.img"
truncate -s "${SIZE_MIB}M" "$img"
for ((i = 0; i < SIZE_MIB / 16; i++)); do
  dd if=/dev/urandom of="$img" bs=4M count=1 seek=$((i * 4)) conv=notrunc status=none
done

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$BIN" --data-dir "$work/data" --bind 127.0.0.1 --port "$port" 2>"$work/server.log" &
pid=$!
for _ in $(seq 100); do curl -sf "127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
TOKEN=$(cat "$work/data/admin-token")
auth=(-H "Authorization: Bearer $TOKEN")
base="http://127.0.0.1:$port"
uuid=$(curl -sS "${auth[@]}" -X POST "$base/api/v1/images" -H 'Content-Type: application/json' \
  -d "{\"name\": \"bench\", \"size\": $((SIZE_MIB << 20))}" | jq -r .image.id)

mbs() { awk -v b="$1" -v s="$2" 'BEGIN { printf "%.0f", b / s / 1e6 }'; }
bytes=$((SIZE_MIB << 20))

t=$(curl -sS -o /dev/null -w '%{time_total}' "file://$img")
echo "curl reading the file:     $(mbs $bytes "$t") MB/s"

t=$(curl -sS -o /dev/null -w '%{time_total}' "${auth[@]}" -H 'Content-Type: application/octet-stream' \
  -X POST -T "$img" "$base/api/v1/images/$uuid/versions")
echo "upload (raw body):         $(mbs $bytes "$t") MB/s"
t=$(curl -sS -o /dev/null -w '%{time_total}' "${auth[@]}" -F "file=@$img" "$base/image/$uuid")
echo "upload (multipart, again): $(mbs $bytes "$t") MB/s"
echo "server peak RSS:           $(awk '/VmHWM/ { print $2 / 1024 " MiB" }' "/proc/$pid/status")"

t=$(curl -sS -o "$work/back.img" -w '%{time_total}' "${auth[@]}" "$base/api/v1/images/$uuid/versions/1/content")
echo "download to a file:        $(mbs $bytes "$t") MB/s"
t=$(curl -sS -o /dev/null -w '%{time_total}' "${auth[@]}" "$base/api/v1/images/$uuid/versions/1/content")
echo "download to /dev/null:     $(mbs $bytes "$t") MB/s"
cmp "$img" "$work/back.img" && echo "round trip: byte-identical"
echo "server peak RSS (end):     $(awk '/VmHWM/ { print $2 / 1024 " MiB" }' "/proc/$pid/status")"
