#!/usr/bin/env bash
# One-time set-up: a virtual environment in .venv with turnpike and its test tools.
# torch is pinned to 2.13.0, whose CPU build is what pip resolves on these machines
# (an unpinned torch would pull a multi-GB CUDA build).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
if ! .venv/bin/python -c "import turnpike, pytest, hypothesis" >/dev/null 2>&1; then
  .venv/bin/pip install --quiet --disable-pip-version-check -e '.[test]'
fi
