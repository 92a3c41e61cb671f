#!/usr/bin/env bash
# Scale-out check: MACHINES simulated agents (default 500) take and finish
# JOBS jobs (default 2000) against 1, 2 and 3 baas-server processes on one
# PostgreSQL database and one shared chunk directory (loopback only).
# Prints, per run, jobs handed out, duplicates (must be 0), jobs left
# (must be 0), jobs per second and the cores each part used; then the
# median jobs/s per server count and its ratio to one server. Exits
# non-zero if any run handed a job out twice or left one.
#   benches/swarm.sh [MACHINES] [JOBS]
# Environment:
#   SERVER_CPU=0.25  cores each server may use (a cgroup v1 CPU quota per
#                    server, as if each ran on its own small machine, while
#                    PostgreSQL and the load tool stay uncapped); 0 or
#                    "none" runs the servers uncapped (then on a 2-core
#                    machine every part shares the same two cores and more
#                    servers only add context switches)
#   SERVERS="1 2 3"  server counts to run;  REPS=1  repetitions of each
#   ROCKET_WORKERS   async worker threads per server, ROCKET_MAX_BLOCKING
#                    its blocking-pool threads (Rocket's own settings; when
#                    capped, ROCKET_WORKERS defaults to 1 as befits a quarter
#                    of a core; otherwise Rocket's defaults, one per core and
#                    512: the server admits at most twice --db-pool-size
#                    service calls at once whatever the pool)
# Capping needs root and the cgroup v1 cpu and cpuacct hierarchies under
# /sys/fs/cgroup; the script says so and stops if it cannot make them.
# Needs PostgreSQL at BAAS_TEST_POSTGRES_URL (.ci/postgres-up starts it).
set -euo pipefail
cd "$(dirname "$0")/.."
machines="${1:-500}"; jobs="${2:-2000}"
pg="${BAAS_TEST_POSTGRES_URL:-postgres://postgres:postgres@127.0.0.1:5432/postgres}"
cpu="${SERVER_CPU:-0.25}"; counts="${SERVERS:-1 2 3}"; reps="${REPS:-1}"
case "$cpu" in 0|0.0|none|"") cpu=none ;; esac
cpu_root=/sys/fs/cgroup/cpu; acct_root=/sys/fs/cgroup/cpuacct
tag="baas-swarm-$$"
tmp=$(mktemp -d); pids=(); groups=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  for g in "${groups[@]}"; do rmdir "$g" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# mkgroup HIERARCHY NAME: makes the cgroup, remembers it for cleanup.
mkgroup() {
  mkdir "$1/$2" 2>/dev/null || return 1
  groups+=("$1/$2")
}
# Runs "$@" inside the cgroup directories listed (space-separated) in $1,
# in place of the (sub)shell that calls it, so `$!` is the command's pid.
in_groups() {
  local gs=$1; shift
  # shellcheck disable=SC2016
  exec sh -c 'for g in $0; do echo $$ > "$g/cgroup.procs" || exit 1; done; exec "$@"' "$gs" "$@"
}

accounting=yes
if [ "$cpu" != none ]; then
  quota=$(awk -v c="$cpu" 'BEGIN { q = int(c * 100000); if (q < 1000) exit 1; print q }') || {
    echo "swarm.sh: SERVER_CPU=$cpu is not a number of cores >= 0.01" >&2; exit 2; }
  if ! mkgroup "$cpu_root" "$tag-probe" || ! mkgroup "$acct_root" "$tag-probe" \
     || ! echo "$quota" >"$cpu_root/$tag-probe/cpu.cfs_quota_us" 2>/dev/null; then
    echo "swarm.sh: cannot create a CPU cgroup with a quota under $cpu_root and $acct_root" >&2
    echo "  (needs root and cgroup v1 cpu/cpuacct hierarchies); run with SERVER_CPU=none for uncapped servers" >&2
    exit 1
  fi
  export ROCKET_WORKERS="${ROCKET_WORKERS:-1}"
  echo "servers capped at $cpu cores each (cfs_quota_us=$quota per 100000 us);" \
    "ROCKET_WORKERS=$ROCKET_WORKERS ROCKET_MAX_BLOCKING=${ROCKET_MAX_BLOCKING:-default}"
else
  mkgroup "$acct_root" "$tag-probe" || accounting=no
  echo "servers uncapped (SERVER_CPU=none); ROCKET_WORKERS=${ROCKET_WORKERS:-default}" \
    "ROCKET_MAX_BLOCKING=${ROCKET_MAX_BLOCKING:-default}"
fi
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"

cargo build -q --release -p baas-server -p baas-benches --bin baas-server --bin agent-swarm

results="$tmp/results"; : >"$results"
for rep in $(seq "$reps"); do
for n in $counts; do
  db="baas_swarm_$$_$n"
  psql -q "$pg" -c "CREATE DATABASE $db" >/dev/null
  url="${pg%/*}/$db"
  urls=(); acct=()
  for i in $(seq "$n"); do
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    mkdir -p "$tmp/$n-$i"
    gs=""
    if [ "$accounting" = yes ]; then
      mkgroup "$acct_root" "$tag-$rep-$n-$i"; gs="$acct_root/$tag-$rep-$n-$i"
      acct+=("servers=$gs/cpuacct.usage")
    fi
    if [ "$cpu" != none ]; then
      mkgroup "$cpu_root" "$tag-$rep-$n-$i"
      echo 100000 >"$cpu_root/$tag-$rep-$n-$i/cpu.cfs_period_us"
      echo "$quota" >"$cpu_root/$tag-$rep-$n-$i/cpu.cfs_quota_us"
      gs="$gs $cpu_root/$tag-$rep-$n-$i"
    fi
    in_groups "$gs" target/release/baas-server serve --data-dir "$tmp/$n-$i" --database-url "$url" \
      --chunk-dir "$tmp/chunks-$n" --bind 127.0.0.1 --port "$port" >"$tmp/$n-$i.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 150); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.2; done
    curl -sf "http://127.0.0.1:$port/healthz" >/dev/null || {
      echo "swarm.sh: server $i of $n did not start:" >&2; cat "$tmp/$n-$i.log" >&2; exit 1; }
    urls+=("http://127.0.0.1:$port")
  done
  token=$(cat "$tmp/$n-1/admin-token")
  gs=""
  if [ "$accounting" = yes ]; then
    mkgroup "$acct_root" "$tag-$rep-$n-load"; gs="$acct_root/$tag-$rep-$n-load"
    acct+=("load tool=$gs/cpuacct.usage" "machine=$acct_root/cpuacct.usage")
  fi
  line=$(SWARM_CPUACCT="$(IFS=,; echo "${acct[*]}")" in_groups "$gs" \
    target/release/agent-swarm "$token" "$machines" "$jobs" "${urls[@]}")
  echo "$line"
  echo "$line" >>"$results"
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
  psql -q "$pg" -c "DROP DATABASE $db WITH (FORCE)" >/dev/null
done
done

python3 - "$results" "$cpu" <<'EOF'
import re, statistics, sys
runs = {}
bad = 0
for line in open(sys.argv[1]):
    f = dict(re.findall(r"(\w+)=([\d.]+)", line.split(" cores:")[0]))
    runs.setdefault(int(f["servers"]), []).append(float(f["jobs_per_s"]))
    bad += int(f["duplicates"]) + int(f["left"])
cap = "uncapped" if sys.argv[2] == "none" else f"{sys.argv[2]} cores per server"
print(f"summary ({cap}): servers, median jobs/s (runs), ratio to 1 server")
base = statistics.median(runs[1]) if 1 in runs else None
for n in sorted(runs):
    m = statistics.median(runs[n])
    ratio = f"{m / base:.2f}x" if base else "-"
    print(f"  {n}  {m:7.1f}  ({', '.join(f'{v:.1f}' for v in runs[n])})  {ratio}")
if bad:
    print(f"FAILED: {bad} duplicate or left-over jobs")
    sys.exit(1)
EOF
