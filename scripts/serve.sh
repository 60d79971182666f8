#!/usr/bin/env bash
# Set up this machine and run Myriad with the example agents on its embedded defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec python3 -m myriad serve --agents examples.counter,examples.reminders,examples.assistant,examples.notes "$@"
