#!/usr/bin/env bash
# Set up everything the tests need, then run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
python3 -m ruff check src/  # ruff's default rules (pyproject [tool.ruff])
# the type check ([tool.mypy] in pyproject). Its cache lives outside the checkout (never in
# git) and is shared by every clone on this machine: ~40 s of CPU cold, ~2 s warm
python3 -m mypy --strict src/ --cache-dir "${MYPY_CACHE_DIR:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/myriad-mypy}"
exec python3 -m pytest -q -p no:cacheprovider "$@"
