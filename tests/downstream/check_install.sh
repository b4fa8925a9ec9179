#!/usr/bin/env bash
# The install_downstream test: installs a Nimbus build tree into a temporary prefix and uses
# it as consumers do. Builds this directory's project with find_package(nimbus) and with
# pkg-config and runs it, runs the installed CLI, imports the installed Python package and
# runs a workflow through it. Nothing of Nimbus is rebuilt; the prefix is removed at exit.
#
# Environment (set by tests/CMakeLists.txt): NIMBUS_BUILD_DIR, NIMBUS_VERSION, NIMBUS_CXX,
# NIMBUS_SOURCE_DIR, NIMBUS_LIBDIR, NIMBUS_DATADIR, NIMBUS_PYTHON_INSTALL_DIR (empty: the
# build has no Python package).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/nimbus-install-check.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix
fail() { echo "install_downstream: FAILED: $*" >&2; exit 1; }
step() { echo "--- $*"; }

step "cmake --install into $prefix"
cmake --install "$NIMBUS_BUILD_DIR" --prefix "$prefix" > "$tmp/install.log" || { cat "$tmp/install.log"; exit 1; }

step "installed headers are the public ones (include/nimbus + the generated version.h)"
installed=$(cd "$prefix/include" && find . -type f | sort)
public=$( (cd "$NIMBUS_SOURCE_DIR/include" && find . -type f; echo ./nimbus/version.h) | sort)
[ "$installed" = "$public" ] || fail "installed headers differ from include/: $(diff <(echo "$public") <(echo "$installed"))"

step "find_package(nimbus $NIMBUS_VERSION) + nimbus::nimbus"
cmake -S "$here" -B "$tmp/cmake-build" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_CXX_COMPILER="$NIMBUS_CXX" \
      -DCMAKE_BUILD_TYPE=Release -DNIMBUS_REQUIRED_VERSION="$NIMBUS_VERSION" > "$tmp/configure.log" 2>&1 \
  || { cat "$tmp/configure.log"; fail "configuring the downstream project"; }
cmake --build "$tmp/cmake-build" > "$tmp/build.log" 2>&1 || { cat "$tmp/build.log"; fail "building the downstream project"; }
"$tmp/cmake-build/nimbus_downstream" "$NIMBUS_VERSION"

step "pkg-config nimbus"
export PKG_CONFIG_PATH="$prefix/$NIMBUS_LIBDIR/pkgconfig"
[ "$(pkg-config --modversion nimbus)" = "$NIMBUS_VERSION" ] || fail "pkg-config --modversion nimbus"
flags=$(pkg-config --cflags --libs nimbus)
echo "$flags"
include_flag=$(pkg-config --cflags-only-I nimbus | tr ' ' '\n' | grep -m1 -- '^-I')
[ "$(realpath "${include_flag#-I}")" = "$(realpath "$prefix/include")" ] || fail "pkg-config -I is not $prefix/include"
# shellcheck disable=SC2086  # the flags are words
"$NIMBUS_CXX" -std=c++17 -DNIMBUS_DOWNSTREAM_INSTALLED "$here/main.cpp" -o "$tmp/pkg-config-build" $flags
"$tmp/pkg-config-build" "$NIMBUS_VERSION"

# A workflow only the install tree has: the installed front ends must read their own copy.
workflows=$prefix/$NIMBUS_DATADIR/nimbus/workflows
mkdir -p "$workflows/install_check"
cp "$workflows/data_ingestion/sentinel2/improve_cloud_mask.yaml" "$workflows/install_check/seed_copy.yaml"
cd "$tmp"  # nowhere near the source or build tree

step "installed CLI"
# The first line names Nimbus' version; GDAL, OpenCV and oneDNN follow.
[ "$("$prefix/bin/nimbus" --version | head -n 1)" = "nimbus $NIMBUS_VERSION" ] || fail "nimbus --version says '$("$prefix/bin/nimbus" --version)'"
"$prefix/bin/nimbus" workflows list | grep -qx "install_check/seed_copy" \
  || fail "the installed nimbus does not list the installed workflows ($workflows)"

if [ -n "$NIMBUS_PYTHON_INSTALL_DIR" ]; then
  step "installed Python package"
  PYTHONPATH="$prefix/$NIMBUS_PYTHON_INSTALL_DIR" /usr/bin/python3 - "$prefix" "$NIMBUS_VERSION" <<'PY'
import os
import sys

import numpy as np

import nimbus

prefix, version = os.path.realpath(sys.argv[1]), sys.argv[2]
assert os.path.realpath(nimbus.__file__).startswith(prefix + os.sep), f"imported {nimbus.__file__}, not the install"
assert nimbus.__version__ == version, f"nimbus.__version__ {nimbus.__version__} != {version}"
assert os.path.realpath(nimbus.WORKFLOWS_DIR).startswith(prefix + os.sep), f"WORKFLOWS_DIR {nimbus.WORKFLOWS_DIR}"
rng = np.random.default_rng(0)
s2 = rng.integers(1, 5000, (12, 530, 520), dtype=np.uint16)
pm = np.zeros((530, 520), np.uint8)
pm[:40] = 1
sinks = nimbus.run_workflow("install_check/seed_copy", {"s2_raster": s2, "product_mask": pm},
                            params={"cloud_model": "embedded:nimbus_cloud_v2", "shadow_model": "embedded:nimbus_shadow_v1"},
                            geotransform=(600000, 10, 0, 5000000, 0, -10), crs="EPSG:32631")
mask = sinks["mask"].array  # a GeoArray: the mask with its transform and CRS
assert sinks["mask"].geotransform == (600000, 10, 0, 5000000, 0, -10), sinks["mask"].geotransform
assert mask.shape == (530, 520) and mask[:40].all(), "the product mask's cloud is in the workflow's mask"
print(f"nimbus {nimbus.__version__} from {os.path.dirname(nimbus.__file__)}, workflows {nimbus.WORKFLOWS_DIR}")
PY
fi
echo "install_downstream: ok"
