#!/usr/bin/env bash
# The crash-consistency loop at full length: SIGKILLs the real baas-server
# at random points during uploads, job hand-outs and GC, ITERATIONS times
# (default 60), restarting it each time, then the disk-full and the
# PostgreSQL-restart tests. CI runs the same tests with 12 iterations.
#   benches/crash-loop.sh [ITERATIONS]
set -euo pipefail
cd "$(dirname "$0")/.."
export BAAS_CRASH_ITERATIONS="${1:-60}"
nice -n 19 cargo test --release -p baas-server --test crash -- --nocapture --test-threads 1 2>&1 |
  grep -E "crash loop|postgres restart|^test |test result"
