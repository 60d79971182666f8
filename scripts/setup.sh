#!/usr/bin/env bash
# Set up a fresh machine (Debian + Python 3.11) for Myriad.
#   scripts/setup.sh          runtime only
#   scripts/setup.sh --test   also what the tests need (Node client, Chromium, ...)
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[[ "${1:-}" == "--test" ]] && want_test=1

SUDO=""
[[ $(id -u) -ne 0 ]] && SUDO="sudo"

apt_pkgs=(bubblewrap e2fsprogs mount)  # e2fsprogs + mount: per-sandbox disk images (sandbox/disk.py)
if (( want_test )); then
  apt_pkgs+=(nodejs npm git curl python3 chromium postgresql)  # git/curl/python3: used inside sandboxes by tests/sandbox; chromium: dashboard tests; postgresql: tests start their own servers (tests/pg.py)
fi
missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
# node/npm may come from elsewhere than Debian; only install if the commands are absent
if (( ${#missing[@]} )); then
  filtered=()
  for p in "${missing[@]}"; do
    if [[ "$p" == nodejs ]] && command -v node >/dev/null; then continue; fi
    if [[ "$p" == npm ]] && command -v npm >/dev/null; then continue; fi
    filtered+=("$p")
  done
  if (( ${#filtered[@]} )); then
    echo "==> apt-get install ${filtered[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${filtered[@]}" >/dev/null
  fi
fi

echo "==> pip install -e ."
if (( want_test )); then
  # the local embedder's tests need torch: the CPU wheel by exact version (a bare
  # `torch` would resolve to a multi-GB CUDA build); ~40 s on a fresh machine
  python3 -m pip install -q --disable-pip-version-check torch==2.13.0
  # cluster: Ray 2.60.0 (~380 MB) for tests/cluster (a real 2-node Ray cluster on this machine)
  python3 -m pip install -q --disable-pip-version-check -e ".[test,embeddings,cluster]"
else
  python3 -m pip install -q --disable-pip-version-check -e ".[telemetry,mcp]"
fi

if (( want_test )); then
  echo "==> npm install (tests/node: the npm 'agents' client)"
  (cd tests/node && npm install --no-audit --no-fund --silent)
  echo "==> npm install (tests/node/chat: useAgentChat of @cloudflare/ai-chat, with ai 7)"
  (cd tests/node/chat && npm install --no-audit --no-fund --silent)
fi
echo "==> setup done"
