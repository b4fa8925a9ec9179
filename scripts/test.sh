#!/usr/bin/env bash
# Runs every test: installs dependencies if missing, builds, then CTest runs the
# GoogleTest suite and the pytest suite (reference parity, CLI, bad inputs).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
bash scripts/build.sh
ctest --test-dir build --output-on-failure -j 2
