#!/usr/bin/env bash
# The subproject_configure test: configures this directory's project with Nimbus as a
# subproject (add_subdirectory, as FetchContent does) and checks that Nimbus keeps to its own
# binary directory and leaves its tests and benchmarks out. Configure only: nothing is built.
# Usage: check_subproject.sh NIMBUS_SOURCE_DIR CXX_COMPILER
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/nimbus-subproject-check.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail() { echo "subproject_configure: FAILED: $*" >&2; exit 1; }

cmake -S "$here" -B "$tmp/build" -DNIMBUS_SOURCE_DIR="$1" -DCMAKE_CXX_COMPILER="$2" > "$tmp/configure.log" 2>&1 \
  || { cat "$tmp/configure.log"; fail "configuring with add_subdirectory(nimbus)"; }
[ -f "$tmp/build/nimbus/generated/include/nimbus/version.h" ] || fail "no nimbus/version.h in Nimbus's binary dir"
[ ! -e "$tmp/build/generated" ] || fail "Nimbus wrote generated files into the top-level binary dir"
grep -q '^NIMBUS_BUILD_TESTS:BOOL=OFF' "$tmp/build/CMakeCache.txt" || fail "a subproject builds Nimbus's tests"
[ ! -e "$tmp/build/nimbus/tests" ] || fail "a subproject configures Nimbus's tests"
echo "subproject_configure: ok"
