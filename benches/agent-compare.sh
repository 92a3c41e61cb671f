#!/usr/bin/env bash
# Issue 4's measurements, side by side in one run, loopback only:
#  - full flash of a raw image (25% data, 75% zeros) onto a file-backed disk
#    by baas-agent from a local baas-server, against `dd bs=4M conv=fsync`
#    of the raw image, `bmaptool copy` of it (local file) and `bmaptool copy`
#    of its zstd-compressed form over HTTP (nginx on 127.0.0.1; python's
#    http.server when nginx is missing). Targets: faster than bmaptool over
#    HTTP, at least 2x faster than dd;
#  - reprovisioning A -> B (about 1% changed, contiguous): bytes fetched
#    against the bytes changed (target: at most 2x), time against the full
#    flash, and the time the transfer would take on a 1 Gbit/s link;
#  - capture of the unchanged disk: bytes uploaded (target: under 1 MiB),
#    time against reading the disk with dd;
#  - reprovisioning A -> C (1% of the 4 KiB blocks rewritten at scattered
#    places, the worst case for chunked transfers): bytes on the wire in
#    both directions with sub-chunk deltas against whole chunks
#    (`--no-deltas`, the same agent, RUNS pairs back to back), against
#    `rsync --inplace -z --block-size=4096` (from an rsync daemon) and a
#    seeded `casync extract` (store over HTTP), when those are installed.
#
#   benches/agent-compare.sh [SIZE_MIB]       # default 4096
#   RUNS=5 benches/agent-compare.sh           # flash/dd and C pairs (default 3)
#   ONLY=deltas benches/agent-compare.sh 1024 # only A -> B and A -> C
#
# Installs bmap-tools, nginx, zstd, curl and jq with apt-get when missing
# (as root). Everything listens on 127.0.0.1 and is stopped on exit; every
# step runs under `timeout`. Writes a table to stdout (and to
# $OUT, default target/agent-compare.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB="${1:-4096}"
OUT="${OUT:-target/agent-compare.txt}"
STEP_TIMEOUT="${STEP_TIMEOUT:-900}"
MAC=52:54:00:be:0c:01

need() { command -v "$1" >/dev/null || [ -x "/usr/sbin/$1" ]; }
missing=()
for t in bmaptool:bmap-tools nginx:nginx zstd:zstd curl:curl jq:jq; do
  need "${t%%:*}" || missing+=("${t##*:}")
done
if [ "${#missing[@]}" -gt 0 ] && [ "$(id -u)" = 0 ]; then
  if ! apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1; then
    apt-get update -qq >/dev/null 2>&1 || true
    apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 || true
  fi
fi
for t in bmaptool zstd curl jq; do need "$t" || { echo "missing $t" >&2; exit 1; }; done

cargo build --release -q -p baas-server -p baas-agent
SERVER=target/release/baas-server
AGENT=target/release/baas-agent

work=$(mktemp -d "${TMPDIR:-/tmp}/agent-compare.XXXXXX")
chmod 755 "$work"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
t() { timeout "$STEP_TIMEOUT" "$@"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
# Cold caches for every timed step (as root); WARM=1 keeps them warm.
drop_caches() { sync; [ -z "${WARM:-}" ] && [ -w /proc/sys/vm/drop_caches ] && echo 3 > /proc/sys/vm/drop_caches || true; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }

# --- data: 4 MiB of random data in every 16 MiB (25%), holes elsewhere
make_image() { # file size_mib offset_mib
  truncate -s "${2}M" "$1"
  for ((i = 0; i < $2 / 16; i++)); do
    dd if=/dev/urandom of="$1" bs=1M count=4 seek=$((i * 16 + $3)) conv=notrunc status=none
  done
}
echo "making a ${SIZE_MIB} MiB image (25% data)..." >&2
img="$work/a.img"; make_image "$img" "$SIZE_MIB" 0
# B: A with 1% of it rewritten contiguously (new files in a filesystem).
changed_mib=$((SIZE_MIB / 100)); [ "$changed_mib" -ge 1 ] || changed_mib=1
cp --sparse=always "$img" "$work/b.img"
dd if=/dev/urandom of="$work/b.img" bs=1M count="$changed_mib" seek=$((SIZE_MIB / 3)) conv=notrunc status=none
# C: A with 1% of its 4 KiB blocks (data and holes alike) rewritten with
# random bytes at places spread over the whole image (seeded).
cp --sparse=always "$img" "$work/c.img"
python3 - "$work/c.img" <<'PY'
import os, random, sys
path = sys.argv[1]
blocks = os.path.getsize(path) // 4096
rng = random.Random(1)
with open(path, "r+b") as f:
    for b in sorted(rng.sample(range(blocks), blocks // 100)):
        f.seek(b * 4096)
        f.write(rng.randbytes(4096))
PY
# A disk that holds something else (a previous user's data elsewhere).
make_image "$work/dirty.img" "$SIZE_MIB" 8
bmaptool -q create -o "$work/a.bmap" "$img"
zstd -q -1 -T0 "$img" -o "$work/www-a.img.zst"
mkdir -p "$work/www"; mv "$work/www-a.img.zst" "$work/www/a.img.zst"; chmod -R a+rX "$work/www"
img_bytes=$((SIZE_MIB << 20))

# --- HTTP for bmaptool: nginx, else python
hport=$(free_port)
if need nginx; then
  NGINX=$(command -v nginx || echo /usr/sbin/nginx)
  mkdir -p "$work/nginx"
  cat > "$work/nginx/nginx.conf" <<CONF
worker_processes 2;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 256; }
http {
  log_format bytes '\$bytes_sent';
  access_log $work/nginx/access.log bytes; sendfile on;
  client_body_temp_path $work/nginx/body; proxy_temp_path $work/nginx/proxy;
  fastcgi_temp_path $work/nginx/fcgi; uwsgi_temp_path $work/nginx/uwsgi; scgi_temp_path $work/nginx/scgi;
  server { listen 127.0.0.1:$hport; root $work/www; }
}
CONF
  "$NGINX" -c "$work/nginx/nginx.conf" -g 'daemon off;' & pids+=($!)
  http_server=nginx
else
  (cd "$work/www" && exec python3 -m http.server --bind 127.0.0.1 "$hport" >/dev/null 2>&1) & pids+=($!)
  http_server="python http.server"
fi

# --- baas-server with the image as versions 1 (A) and 2 (B)
port=$(free_port)
"$SERVER" --data-dir "$work/data" --bind 127.0.0.1 --port "$port" 2>"$work/server.log" & spid=$!; pids+=($spid)
for _ in $(seq 200); do curl -sf "127.0.0.1:$port/healthz" >/dev/null && curl -sf "127.0.0.1:$hport/a.img.zst" -r 0-0 -o /dev/null && break; sleep 0.1; done
base="http://127.0.0.1:$port"
TOKEN=$(cat "$work/data/admin-token")
api() { local m=$1 p=$2; shift 2; curl -sSf -H "Authorization: Bearer $TOKEN" -X "$m" "$base$p" "$@"; }
image=$(api POST /api/v1/images -H 'Content-Type: application/json' \
  -d "{\"name\": \"agent-compare\", \"size\": $img_bytes}" | jq -r .image.id)
echo "uploading A, B and C..." >&2
api POST "/api/v1/images/$image/versions" -H 'Content-Type: application/octet-stream' -T "$img" --max-time "$STEP_TIMEOUT" >/dev/null
api POST "/api/v1/images/$image/versions" -H 'Content-Type: application/octet-stream' -T "$work/b.img" --max-time "$STEP_TIMEOUT" >/dev/null
api POST "/api/v1/images/$image/versions" -H 'Content-Type: application/octet-stream' -T "$work/c.img" --max-time "$STEP_TIMEOUT" >/dev/null
machine=$(api POST /api/v1/machines -H 'Content-Type: application/json' -d "{\"mac\": \"$MAC\"}" | jq -r .id)
agent_token=$(api POST "/api/v1/machines/$machine/agent-token" -H 'Content-Type: application/json' -d '{}' | jq -r .secret)

# The agent sees a machine with one NIC; its disk is a file (the config's
# disk map), so nothing here touches a real device.
root="$work/root"
mkdir -p "$root/sys/block" "$root/sys/class/net/eth0" "$root/proc"
echo "$MAC" > "$root/sys/class/net/eth0/address"; echo 1 > "$root/sys/class/net/eth0/type"
cp /proc/meminfo /proc/cpuinfo "$root/proc/" 2>/dev/null || true
disk="$work/disk.img"
cat > "$work/agent.toml" <<CONF
server = "$base"
mac = "$MAC"
token = "$agent_token"
root = "$root"
[disks]
"first" = "$disk"
CONF
queue() { # version capture -> job id
  api POST "/api/v1/machines/$machine/jobs" -H 'Content-Type: application/json' \
    -d "{\"image_id\": \"$image\", \"version\": $1, \"disk\": \"first\", \"capture\": $2}" | jq -r .id
}
# The agent's own CPU time and page faults go to "$1.usage" when
# /usr/bin/time exists; the server's CPU time is read from /proc.
server_cpu() { awk '{ printf "%.2f", ($14 + $15) / 100 }' "/proc/$spid/stat" 2>/dev/null || echo 0; }
run_agent() { # log file [agent options]
  local log=$1 before; shift; before=$(server_cpu)
  if [ -x /usr/bin/time ]; then
    t /usr/bin/time -o "$log.usage" -f "agent %U s user, %S s sys, %R minor faults" \
      "$AGENT" --config "$work/agent.toml" --once --no-reboot --log info "$@" 2>"$log"
  else
    t "$AGENT" --config "$work/agent.toml" --once --no-reboot --log info "$@" 2>"$log"
  fi
  echo "server $(awk -v a="$before" -v b="$(server_cpu)" 'BEGIN { printf "%.2f", b - a }') s CPU" >> "$log.usage"
}
usage() { tr '\n' ';' < "$1.usage" 2>/dev/null | sed 's/;$//; s/;/; /g'; }
field() { grep -oE "(^| )$2=[0-9]+" "$1" | tail -1 | cut -d= -f2; }
cancel() { api POST "/api/v1/jobs/$1/cancel" -H 'Content-Type: application/json' -d '{}' >/dev/null; }

declare -A T
# 1. Full flash: onto an empty (sparse) disk, and onto a disk holding
#    other data.
truncate -s 0 "$disk"; truncate -s "${SIZE_MIB}M" "$disk"
drop_caches; job=$(queue 1 false); s=$(now); run_agent "$work/flash-empty.log"; T[flash_empty]=$(since "$s")
cmp -s "$img" "$disk" || { echo "disk differs from A after flash" >&2; exit 1; }
fetched_full=$(field "$work/flash-empty.log" frame_bytes_received)
cancel "$job"
if [ "${ONLY:-}" != deltas ]; then
cp --sparse=always "$work/dirty.img" "$disk"
drop_caches; job=$(queue 1 false); s=$(now); run_agent "$work/flash-dirty.log"; T[flash_dirty]=$(since "$s")
cmp -s "$img" "$disk" || { echo "disk differs from A after flash over old data" >&2; exit 1; }
cancel "$job"

# 2. dd and bmaptool.
rm -f "$work/dd.img"; drop_caches; s=$(now)
t dd if="$img" of="$work/dd.img" bs=4M conv=fsync status=none; T[dd]=$(since "$s")
rm -f "$work/dd.img"
cp --sparse=always "$work/dirty.img" "$work/bmap.img"; drop_caches; s=$(now)
t bmaptool -q copy --bmap "$work/a.bmap" "$img" "$work/bmap.img"; T[bmap_local]=$(since "$s")
cmp -s "$img" "$work/bmap.img" || echo "note: bmaptool copy (local) leaves the unmapped regions as they were" >&2
cp --sparse=always "$work/dirty.img" "$work/bmap.img"; drop_caches; s=$(now)
t bmaptool -q copy --bmap "$work/a.bmap" "http://127.0.0.1:$hport/a.img.zst" "$work/bmap.img"; T[bmap_http]=$(since "$s")
rm -f "$work/bmap.img"

# 2b. Repeated pairs, for same-run ratios on a noisy machine: a full flash
#     onto an empty disk, then dd of the image, back to back (RUNS, default
#     3).
RUNS="${RUNS:-3}"
pairs=()
for ((r = 1; r <= RUNS; r++)); do
  truncate -s 0 "$disk"; truncate -s "${SIZE_MIB}M" "$disk"
  drop_caches; job=$(queue 1 false); s=$(now); run_agent "$work/flash-run$r.log"; a=$(since "$s")
  cmp -s "$img" "$disk" || { echo "disk differs from A after flash (run $r)" >&2; exit 1; }
  cancel "$job"
  rm -f "$work/dd.img"; drop_caches; s=$(now)
  t dd if="$img" of="$work/dd.img" bs=4M conv=fsync status=none; d=$(since "$s")
  rm -f "$work/dd.img"
  pairs+=("$a $d")
done
fi

# 3. A -> B on the disk holding A.
drop_caches; job=$(queue 2 false); s=$(now); run_agent "$work/delta.log"; T[delta]=$(since "$s")
cmp -s "$work/b.img" "$disk" || { echo "disk differs from B after the delta flash" >&2; exit 1; }
fetched_delta=$(field "$work/delta.log" frame_bytes_received)
cancel "$job"

# 3b. A -> C on a disk holding A: whole chunks against deltas, RUNS pairs
#     back to back (the same agent, `--no-deltas` for whole chunks). Bytes
#     on the wire: chunk data received plus the bodies of the requests that
#     asked for it (hashes; for deltas, block hashes).
cpairs=()
for ((r = 1; r <= RUNS; r++)); do
  for mode in whole delta; do
    cp --sparse=always "$img" "$disk"
    opt=(); [ "$mode" = whole ] && opt=(--no-deltas)
    drop_caches; job=$(queue 3 false); s=$(now); run_agent "$work/c-$mode-$r.log" "${opt[@]}"; T[c_$mode]=$(since "$s")
    cmp -s "$work/c.img" "$disk" || { echo "disk differs from C after the $mode flash" >&2; exit 1; }
    cancel "$job"
  done
  cpairs+=("${T[c_whole]} ${T[c_delta]}")
done
c_whole_down=$(field "$work/c-whole-1.log" frame_bytes_received); c_whole_up=$(field "$work/c-whole-1.log" fetch_request_bytes)
c_delta_down=$(field "$work/c-delta-1.log" frame_bytes_received); c_delta_up=$(field "$work/c-delta-1.log" fetch_request_bytes)
c_deltas=$(field "$work/c-delta-1.log" deltas_received)
c_changed=$(python3 - "$img" "$work/c.img" <<'PY'
import sys
n = 0
with open(sys.argv[1], "rb") as a, open(sys.argv[2], "rb") as c:
    while True:
        x, y = a.read(1 << 20), c.read(1 << 20)
        if not x:
            break
        n += sum(x[i:i + 4096] != y[i:i + 4096] for i in range(0, len(x), 4096))
print(n * 4096)
PY
)
rsync_line="rsync: not installed"
if need rsync; then
  mkdir -p "$work/rsync/data"; ln "$work/c.img" "$work/rsync/data/c.img"
  rport=$(free_port)
  printf 'pid file = %s/rsync/pid\nuse chroot = no\n[data]\npath = %s/rsync/data\nread only = yes\nuid = root\ngid = root\n' "$work" "$work" > "$work/rsync/rsyncd.conf"
  rsync --daemon --no-detach --port="$rport" --address=127.0.0.1 --config="$work/rsync/rsyncd.conf" & pids+=($!)
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$rport") 2>/dev/null && break; sleep 0.1; done
  cp --sparse=always "$img" "$disk"
  drop_caches; s=$(now)
  t rsync --inplace --no-whole-file -z --block-size=4096 --stats "rsync://127.0.0.1:$rport/data/c.img" "$disk" > "$work/rsync.log"
  T[c_rsync]=$(since "$s")
  cmp -s "$work/c.img" "$disk" || { echo "disk differs from C after rsync" >&2; exit 1; }
  r_up=$(sed -n 's/^Total bytes sent: //p' "$work/rsync.log" | tr -d ,)
  r_down=$(sed -n 's/^Total bytes received: //p' "$work/rsync.log" | tr -d ,)
  rsync_line="rsync --inplace -z --block-size=4096: $r_down bytes down + $r_up up = $((r_down + r_up)) in ${T[c_rsync]} s"
fi
casync_line="casync: not installed"
if need casync && need nginx; then
  casync make --store="$work/www/castore" "$work/www/c.caibx" "$work/c.img" >/dev/null
  chmod -R a+rX "$work/www"
  cp --sparse=always "$img" "$disk"; rm -f "$work/casync-out.img"
  mark=$(wc -l < "$work/nginx/access.log" 2>/dev/null || echo 0)
  drop_caches; s=$(now)
  # casync cannot extract in place onto a file here (see benches/compare.py):
  # it reads the disk holding A as its seed and writes a new file.
  t casync extract --store="http://127.0.0.1:$hport/castore" --seed="$disk" --seed-output=no \
    "http://127.0.0.1:$hport/c.caibx" "$work/casync-out.img" >/dev/null 2>&1
  T[c_casync]=$(since "$s")
  cmp -s "$work/c.img" "$work/casync-out.img" || { echo "casync output differs from C" >&2; exit 1; }
  rm -f "$work/casync-out.img"
  c_down=$(tail -n +"$((mark + 1))" "$work/nginx/access.log" | awk '{ s += $1 } END { print s + 0 }')
  casync_line="casync extract, seeded: $c_down bytes down (HTTP bodies and headers; requests not counted) in ${T[c_casync]} s"
fi

if [ "${ONLY:-}" != deltas ]; then
# 4. Capture of the unchanged disk: flash B again marked for capture (no
#    change), then the next boot captures it.
job=$(queue 2 true); run_agent "$work/capture-flash.log"
drop_caches; s=$(now); run_agent "$work/capture.log"; T[capture]=$(since "$s")
uploaded=$(field "$work/capture.log" frame_bytes_sent)
sent=$(field "$work/capture.log" bytes_sent)
state=$(api GET "/api/v1/jobs/$job" | jq -r .state)
drop_caches; s=$(now); t dd if="$disk" of=/dev/null bs=4M status=none; T[dd_read]=$(since "$s")
fi

changed=$((changed_mib << 20))
gbit=$(awk -v b="$fetched_delta" 'BEGIN { printf "%.2f", b / 125e6 }')
{
  echo "agent-compare: ${SIZE_MIB} MiB image, 25% data; $(nproc) cores; $(date -u +%F); http: $http_server; caches: ${WARM:+warm}${WARM:-dropped before each step}${ONLY:+; only $ONLY}"
  echo
  if [ "${ONLY:-}" != deltas ]; then
  echo "| what | seconds | vs BAAS |"
  echo "| --- | ---: | ---: |"
  echo "| baas-agent full flash, empty disk | ${T[flash_empty]} | 1.00 |"
  echo "| baas-agent full flash, disk with other data | ${T[flash_dirty]} | $(ratio "${T[flash_dirty]}" "${T[flash_empty]}") |"
  echo "| dd bs=4M conv=fsync | ${T[dd]} | $(ratio "${T[dd]}" "${T[flash_dirty]}") |"
  echo "| bmaptool copy, local raw | ${T[bmap_local]} | $(ratio "${T[bmap_local]}" "${T[flash_dirty]}") |"
  echo "| bmaptool copy, .zst over HTTP | ${T[bmap_http]} | $(ratio "${T[bmap_http]}" "${T[flash_dirty]}") |"
  echo "| baas-agent A -> B (1% changed) | ${T[delta]} | $(ratio "${T[delta]}" "${T[flash_dirty]}") |"
  echo "| baas-agent capture, unchanged disk | ${T[capture]} | - |"
  echo "| dd read of the disk | ${T[dd_read]} | $(ratio "${T[dd_read]}" "${T[capture]}") |"
  echo
  echo "(\"vs BAAS\": the row's time over baas-agent's flash onto a disk with other data; for dd read, over the capture.)"
  echo "full flash: fetched $fetched_full frame bytes for an image of $img_bytes bytes ($((img_bytes / 4)) of them data)"
  echo "A -> B: fetched $fetched_delta frame bytes for $changed changed bytes ($(ratio "$fetched_delta" "$changed")x; target <= 2x); on 1 Gbit/s that transfer takes ${gbit} s"
  echo "costs: full flash (empty disk): $(usage "$work/flash-empty.log")"
  echo "costs: full flash (other data): $(usage "$work/flash-dirty.log")"
  echo "costs: A -> B: $(usage "$work/delta.log")"
  echo "costs: capture: $(usage "$work/capture.log")"
  echo "capture of an unchanged disk: $uploaded frame bytes uploaded, $sent request bytes in all (target < 1048576); job $state"
  echo
  fi
  if [ "${ONLY:-}" != deltas ]; then
  echo "full flash onto an empty disk vs dd bs=4M conv=fsync, $RUNS pairs back to back (dd time / agent time; target >= 2):"
  for ((r = 0; r < ${#pairs[@]}; r++)); do
    set -- ${pairs[$r]}
    echo "  run $((r + 1)): agent $1 s, dd $2 s: $(ratio "$2" "$1")x"
  done
  printf '%s\n' "${pairs[@]}" | awk '{ print $2 / $1 }' | sort -n | awk '
    { v[NR] = $1 } END { if (NR) printf "  dd/agent: median %.2fx, min %.2fx, max %.2fx\n", (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2), v[1], v[NR] }'
  echo
  fi
  echo "A -> B (only delta flash): fetched $fetched_delta frame bytes for $changed changed bytes ($(ratio "$fetched_delta" "$changed")x)"
  echo "A -> C (1% of 4 KiB blocks rewritten, scattered: $c_changed changed bytes), bytes on the wire (down + up):"
  echo "  baas-agent, whole chunks (--no-deltas): $c_whole_down + $c_whole_up = $((c_whole_down + c_whole_up))"
  echo "  baas-agent, deltas: $c_delta_down + $c_delta_up = $((c_delta_down + c_delta_up)) ($c_deltas chunks as deltas); $(ratio "$((c_whole_down + c_whole_up))" "$((c_delta_down + c_delta_up))")x fewer than whole chunks"
  echo "  $rsync_line"
  echo "  $casync_line"
  echo "  costs, whole chunks: $(usage "$work/c-whole-1.log")"
  echo "  costs, deltas: $(usage "$work/c-delta-1.log")"
  echo "A -> C time, whole chunks vs deltas, $RUNS pairs back to back (delta time / whole time):"
  for ((r = 0; r < ${#cpairs[@]}; r++)); do
    set -- ${cpairs[$r]}
    echo "  run $((r + 1)): whole $1 s, deltas $2 s: $(ratio "$2" "$1")x"
  done
  printf '%s\n' "${cpairs[@]}" | awk '{ print $2 / $1 }' | sort -n | awk '
    { v[NR] = $1 } END { if (NR) printf "  delta/whole: median %.2fx, min %.2fx, max %.2fx\n", (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2), v[1], v[NR] }'
} | tee "$OUT"
