#!/usr/bin/env bash
# Upload and download of a 1 GiB image from Python (`baas` bindings, remote
# mode) against the same transfers with curl, in one run, on loopback:
#   - upload: Python's chunk-level upload (hash locally, send the chunks the
#     server lacks, commit) vs curl streaming the file to
#     POST /api/v1/images/{id}/versions; every run uploads fresh random data
#     (25% data: 4 MiB random in every 16 MiB, zeros elsewhere), so neither
#     side profits from chunks already stored;
#   - download: img.download(v, path) (with its root-hash check) vs
#     curl GET .../content -o path (who goes first alternates per run).
# Target: Python >= 90% of curl. Figures are medians of RUNS runs (default 3).
#
#   bindings/python/bench/compare.sh [SIZE_MIB]     # default 1024; RUNS=5, NO_BUILD=1
set -euo pipefail
cd "$(dirname "$0")/../../.."
SIZE_MIB="${1:-1024}"
RUNS="${RUNS:-3}"
VENV=target/py-venv
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q "maturin>=1.7,<2"
if [ "${NO_BUILD:-0}" != 1 ]; then   # NO_BUILD=1: measure what is built
  cargo build --release -q -p baas-server
  (cd bindings/python && VIRTUAL_ENV="$PWD/../../$VENV" PATH="$PWD/../../$VENV/bin:$PATH" maturin develop --release -q >/dev/null)
fi
PY="$VENV/bin/python"
work=$(mktemp -d)
spid=""
cleanup() { [ -n "$spid" ] && kill "$spid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
port=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
env -u BAAS_DATA_DIR target/release/baas-server --data-dir "$work/data" serve --bind 127.0.0.1 --port "$port" 2>"$work/server.log" &
spid=$!
base="http://127.0.0.1:$port"
for _ in $(seq 200); do curl -sf "$base/healthz" >/dev/null && break; sleep 0.1; done
TOKEN=$(cat "$work/data/admin-token")
auth=(-H "Authorization: Bearer $TOKEN")
bytes=$((SIZE_MIB << 20))
img="$work/image.img"
make_image() { rm -f "$img"; truncate -s "${SIZE_MIB}M" "$img"; for ((i = 0; i < SIZE_MIB / 16; i++)); do
  dd if=/dev/urandom of="$img" bs=4M count=1 seek=$((i * 4)) conv=notrunc status=none; done; }
new_image() { curl -sS "${auth[@]}" -X POST "$base/api/v1/images" -H 'Content-Type: application/json' \
  -d "{\"name\": \"bench\", \"size\": $bytes}" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["image"]["id"])'; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mbs() { awk -v b="$bytes" -v s="$1" 'BEGIN { printf "%.0f", b / s / 1e6 }'; }

pysecs() { "$PY" - "$base" "$TOKEN" "$@" <<'PYEOF'
import sys, time, baas
base, token, op, image, arg = sys.argv[1:6]
c = baas.connect(base, token=token)
img = c.image(image)
t = time.perf_counter()
if op == "up":
    img.upload(arg)
else:
    img.download("latest", arg)
print(f"{time.perf_counter() - t:.3f}")
PYEOF
}

up_curl=(); up_py=(); down_curl=(); down_py=()
for r in $(seq "$RUNS"); do
  make_image; id=$(new_image); sync
  up_curl+=("$(curl -sS -o /dev/null -w '%{time_total}' "${auth[@]}" -H 'Content-Type: application/octet-stream' \
    -T "$img" -X POST "$base/api/v1/images/$id/versions")")
  make_image; id=$(new_image); sync
  up_py+=("$(pysecs up "$id" "$img")")
  # Downloads: curl first in odd runs, Python first in even ones.
  down_c() { rm -f "$work/back.img"
    down_curl+=("$(curl -sS -o "$work/back.img" -w '%{time_total}' "${auth[@]}" "$base/api/v1/images/$id/versions/latest/content")"); }
  down_p() { rm -f "$work/back.img"; down_py+=("$(pysecs down "$id" "$work/back.img")")
    cmp -s "$img" "$work/back.img" || { echo "download differs" >&2; exit 1; }; }
  if ((r % 2)); then down_c; down_p; else down_p; down_c; fi
  echo "run $r: upload curl ${up_curl[-1]} s, python ${up_py[-1]} s; download curl ${down_curl[-1]} s, python ${down_py[-1]} s" >&2
done
uc=$(printf '%s\n' "${up_curl[@]}" | median); up=$(printf '%s\n' "${up_py[@]}" | median)
dc=$(printf '%s\n' "${down_curl[@]}" | median); dp=$(printf '%s\n' "${down_py[@]}" | median)
# Per-run python/curl ratios (runs alternate curl and Python), median, min, max.
ratios() { for i in "${!curl_t[@]}"; do awk -v a="${curl_t[$i]}" -v b="${py_t[$i]}" 'BEGIN{printf "%.2f\n", a/b}'; done | sort -n |
  awk '{a[NR]=$1} END {printf "median %s, min %s, max %s", a[int((NR+1)/2)], a[1], a[NR]}'; }
echo "${SIZE_MIB} MiB image (25% random data), median of $RUNS runs, loopback, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
printf 'upload:   curl %6s s (%s MB/s)   python %6s s (%s MB/s)   python/curl %s\n' \
  "$uc" "$(mbs "$uc")" "$up" "$(mbs "$up")" "$(awk -v a="$uc" -v b="$up" 'BEGIN{printf "%.2f", a/b}')"
printf 'download: curl %6s s (%s MB/s)   python %6s s (%s MB/s)   python/curl %s\n' \
  "$dc" "$(mbs "$dc")" "$dp" "$(mbs "$dp")" "$(awk -v a="$dc" -v b="$dp" 'BEGIN{printf "%.2f", a/b}')"
curl_t=("${up_curl[@]}"); py_t=("${up_py[@]}"); echo "upload python/curl per run: $(ratios)"
curl_t=("${down_curl[@]}"); py_t=("${down_py[@]}"); echo "download python/curl per run: $(ratios)"
