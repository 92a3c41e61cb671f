#!/usr/bin/env bash
# Runs every fuzz target for a few seconds on its committed seed corpus
# (CI). cargo-fuzz on the stable toolchain needs `-s none` (no sanitizer:
# the sanitizers are nightly-only); `--dev` keeps the build short.
# FUZZ_SECONDS (default 5) per target.
set -euo pipefail
cd "$(dirname "$0")"
secs="${FUZZ_SECONDS:-5}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --quiet
cargo fuzz build -s none --dev
for t in $(cargo fuzz list); do
  scratch=$(mktemp -d)
  echo "fuzz $t: ${secs}s"
  cargo fuzz run -s none --dev "$t" "$scratch" "corpus/$t" -- \
    -max_total_time="$secs" -rss_limit_mb=2048 -timeout=30 -print_final_stats=1 2>&1 |
    grep -E "^stat::number_of_executed_units|ERROR|panicked|SUMMARY" || true
  # A crash leaves an artifact and a non-zero status; grep above hides the
  # status, so check the artifacts.
  if compgen -G "artifacts/$t/*" >/dev/null; then
    echo "fuzz $t found a failing input:"; ls "artifacts/$t"; exit 1
  fi
  rm -rf "$scratch"
done
