#!/usr/bin/env bash
# BAAS against its peers in one run, on the same data, loopback only:
# full flash (dd, bmaptool local and over HTTP), A -> B and A -> C
# reprovisioning (rsync, casync), capture of an unchanged disk, storage of
# 10 versions (zstd copies, casync store), upload/download (nginx + curl),
# the agent's hot path (wrk against nginx) and the server's peak RSS.
# Writes benches/REPORT.md, its plots in benches/report/, and the headline
# table in README.md.
#
#   benches/compare.sh                        # 4 GiB image, 3 runs, 13 to 14 min on 2 cores
#   SIZE_MIB=512 RUNS=1 benches/compare.sh    # a quick look
#
# Installs what it needs with apt-get when missing (as root). Every server
# listens on 127.0.0.1 and is stopped on exit. See benches/compare.py for
# the other knobs (SEED, VERSIONS, COMPACT, WRK_SECONDS, OUT, KEEP).
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
for t in bmaptool:bmap-tools nginx:nginx zstd:zstd curl:curl wrk:wrk rsync:rsync casync:casync \
         gnuplot:gnuplot-nox debugfs:e2fsprogs; do
  command -v "${t%%:*}" >/dev/null || [ -x "/usr/sbin/${t%%:*}" ] || need+=("${t##*:}")
done
if [ "${#need[@]}" -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { echo "compare.sh: missing ${need[*]} (apt-get install them, or run as root)" >&2; exit 1; }
  apt-get install -y -qq "${need[@]}" >/dev/null 2>&1 || {
    apt-get update -qq >/dev/null && apt-get install -y -qq "${need[@]}" >/dev/null; }
fi
# Two commands: with `--bin`, cargo builds only that binary of every
# package named, and the server and agent would silently stay stale.
cargo build --release -q -p baas-server -p baas-agent
cargo build --release -q -p baas-benches --bin compare-data --bin chunk-upload
exec python3 benches/compare.py "$@"
