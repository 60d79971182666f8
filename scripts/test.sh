#!/usr/bin/env bash
# Set up everything the tests need, then run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
python3 -m ruff check src/  # ruff's default rules (pyproject [tool.ruff]); mypy --strict is not clean yet
exec python3 -m pytest -q -p no:cacheprovider "$@"
