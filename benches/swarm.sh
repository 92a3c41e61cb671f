#!/usr/bin/env bash
# Scale-out check: MACHINES simulated agents (default 500) take and finish
# JOBS jobs (default 2000) against 1 and then 3 baas-server processes on one
# PostgreSQL database and one shared chunk directory (loopback only).
# Prints, per run, jobs handed out, duplicates (must be 0), jobs left
# (must be 0) and jobs per second.
#   benches/swarm.sh [MACHINES] [JOBS]
# Needs PostgreSQL at BAAS_TEST_POSTGRES_URL (.ci/postgres-up starts it).
set -euo pipefail
cd "$(dirname "$0")/.."
machines="${1:-500}"; jobs="${2:-2000}"
pg="${BAAS_TEST_POSTGRES_URL:-postgres://postgres:postgres@127.0.0.1:5432/postgres}"
cargo build -q --release -p baas-server -p baas-benches --bin baas-server --bin agent-swarm
tmp=$(mktemp -d); pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT
for n in 1 3; do
  db="baas_swarm_$$_$n"
  psql -q "$pg" -c "CREATE DATABASE $db" >/dev/null
  url="${pg%/*}/$db"
  urls=()
  for i in $(seq "$n"); do
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    mkdir -p "$tmp/$n-$i"
    nice -n 19 target/release/baas-server serve --data-dir "$tmp/$n-$i" --database-url "$url" \
      --chunk-dir "$tmp/chunks-$n" --bind 127.0.0.1 --port "$port" >"$tmp/$n-$i.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.2; done
    urls+=("http://127.0.0.1:$port")
  done
  token=$(cat "$tmp/$n-1/admin-token")
  nice -n 19 target/release/agent-swarm "$token" "$machines" "$jobs" "${urls[@]}"
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; pids=()
  sleep 1
  psql -q "$pg" -c "DROP DATABASE $db" >/dev/null
done
