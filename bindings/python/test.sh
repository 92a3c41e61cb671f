#!/usr/bin/env bash
# The Python bindings' test suite (run by .ci/test): a venv under target/,
# maturin, pytest and mypy from PyPI, the extension built and installed with
# `maturin develop` (debug profile by default: it shares the workspace's
# debug build; BAAS_PY_RELEASE=1 for an optimised one), baas-server built
# for the tests to start, then pytest.
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(cd ../.. && pwd)
VENV="$ROOT/target/py-venv"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check "maturin>=1.7,<2" pytest mypy
cargo build -q --locked -p baas-server
export BAAS_SERVER_BIN="$ROOT/target/debug/baas-server"
flags=(-q)
[ "${BAAS_PY_RELEASE:-0}" = 1 ] && flags+=(--release)
VIRTUAL_ENV="$VENV" PATH="$VENV/bin:$PATH" maturin develop "${flags[@]}" >/dev/null
exec "$VENV/bin/python" -m pytest tests -q "$@"
