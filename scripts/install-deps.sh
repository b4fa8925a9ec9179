#!/usr/bin/env bash
# Installs every Debian package Nimbus needs to build, run and test. Idempotent:
# packages already present are skipped by apt, and apt's index is refreshed only
# when something is actually missing.
set -euo pipefail

packages=(
  cmake g++ make pkg-config
  clang libclang-rt-14-dev
  libgdal-dev gdal-bin
  libopencv-dev libdnnl-dev
  libonnx-dev libprotobuf-dev protobuf-compiler libssl-dev
  libyaml-cpp-dev libcli11-dev libcpp-httplib-dev libsqlite3-dev libsqlitecpp-dev nlohmann-json3-dev libfmt-dev libspdlog-dev libtbb-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  pybind11-dev python3-dev
  python3-numpy python3-scipy python3-rasterio python3-skimage python3-opencv
  python3-torch python3-onnx python3-pytest python3-pil
  python3-dask python3-distributed python3-xarray python3-requests python3-yaml python3-dateutil chromium
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages already installed"
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
