#!/usr/bin/env bash
# Compaction level against time and size: one store of VERSIONS versions of
# an ext4 image of real files (the first from `compare-data base`, each next
# one with 10 MiB of new files), copied once per level, then
# `baas-server admin compact --level L` on each copy. Prints the seconds and
# the chunk bytes against one `zstd -3` copy of the last version.
#
#   benches/compact-levels.sh [SIZE_MIB] [LEVELS...]   # defaults 1024, 19 15 12 9
#
# Everything listens on 127.0.0.1 and is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB="${1:-1024}"
if [ $# -gt 1 ]; then LEVELS=("${@:2}"); else LEVELS=(19 15 12 9); fi
VERSIONS="${VERSIONS:-5}"
cargo build --release -q -p baas-server
cargo build --release -q -p baas-benches --bin compare-data
BIN=target/release/baas-server; DATA=target/release/compare-data
work=$(mktemp -d /var/tmp/baas-levels.XXXX)
spid=
trap '[ -z "$spid" ] || kill "$spid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$BIN" --data-dir "$work/data" --bind 127.0.0.1 --port "$port" 2>"$work/server.log" & spid=$!
for _ in $(seq 100); do curl -sf "127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
token=$(cat "$work/data/admin-token"); base="http://127.0.0.1:$port"
id=$(curl -sS -H "Authorization: Bearer $token" -X POST "$base/api/v1/images" -H 'Content-Type: application/json' \
  -d "{\"name\": \"levels\", \"size\": $((SIZE_MIB << 20))}" | jq -r .image.id)
"$DATA" base "$work/v.img" "$SIZE_MIB" 25 1
for ((k = 0; k < VERSIONS; k++)); do
  [ "$k" = 0 ] || "$DATA" add-files "$work/v.img" $((1100 + k)) 10
  curl -sSf -o /dev/null -H "Authorization: Bearer $token" -X POST -T "$work/v.img" \
    -H 'Content-Type: application/octet-stream' "$base/api/v1/images/$id/versions"
done
kill "$spid"; wait "$spid" 2>/dev/null || true; spid=
one=$(zstd -3 -T0 -q -c "$work/v.img" | wc -c)
echo "one zstd -3 version: $one bytes; chunks as imported: $(du -sb "$work/data/chunks" | cut -f1) bytes"
for level in "${LEVELS[@]}"; do
  rm -rf "$work/copy"; cp -a "$work/data" "$work/copy"; sync
  start=$(date +%s.%N)
  "$BIN" --data-dir "$work/copy" admin compact --level "$level" >/dev/null 2>&1
  end=$(date +%s.%N)
  bytes=$(du -sb "$work/copy/chunks" | cut -f1)
  awk -v l="$level" -v s="$start" -v e="$end" -v b="$bytes" -v o="$one" \
    'BEGIN { printf "level %2d: %6.1f s, chunks %d bytes = %.3fx one zstd -3 version\n", l, e - s, b, b / o }'
done
