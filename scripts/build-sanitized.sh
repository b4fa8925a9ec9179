#!/usr/bin/env bash
# Configures and builds Nimbus with clang, AddressSanitizer + UndefinedBehaviorSanitizer
# and the libFuzzer targets into ./build-sanitize. Its CTest runs the whole test suite
# against the instrumented binaries, then each fuzz target for a bounded time.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build-sanitize -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ \
      -DNIMBUS_FUZZ=ON -DNIMBUS_BUILD_BENCH=OFF "$@" > build-sanitize.log 2>&1 \
  || { cat build-sanitize.log; exit 1; }
cmake --build build-sanitize -j "$(nproc)" >> build-sanitize.log 2>&1 || { tail -50 build-sanitize.log; exit 1; }
rm -f build-sanitize.log
echo "built ./build-sanitize (ASan + UBSan + libFuzzer)"
