#!/usr/bin/env bash
# Runs every test: installs dependencies if missing, builds, then CTest runs the
# GoogleTest suite and the pytest suite (reference parity, CLI, bad inputs); then the
# same suite again against an ASan + UBSan build (clang), plus each libFuzzer target
# for a bounded time (NIMBUS_FUZZ_SECONDS, default 60).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
bash scripts/build.sh
ctest --test-dir build --output-on-failure -j 2
bash scripts/build-sanitized.sh -DNIMBUS_FUZZ_SECONDS="${NIMBUS_FUZZ_SECONDS:-60}"
ctest --test-dir build-sanitize --output-on-failure -j 2
