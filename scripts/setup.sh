#!/usr/bin/env bash
# One command from a fresh clone to a real cloud mask: installs the Debian
# dependencies, builds Nimbus, makes the demo scene and runs the main job on it
# with the embedded default models. Idempotent; safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
bash scripts/build.sh

# NIMBUS_DEMO_DIR: where the demo scene and its mask go (default demo-out).
demo="${NIMBUS_DEMO_DIR:-demo-out}"
mkdir -p "$demo"
if [ ! -f "$demo/s2.tif" ]; then
  /usr/bin/python3 tests/tools/synthetic_scene.py "$demo" --width 1536 --height 1536 --seed 7 --nodata-wedge
fi
./build/nimbus improve-cloud-mask \
  --s2-raster "$demo/s2.tif" --product-mask "$demo/product_mask.tif" \
  --out "$demo/mask.tif" --preview "$demo/mask_preview.png" --keep-probabilities "$demo/probabilities" \
  --overwrite  # setup.sh may run again: the demo outputs are its own
echo
echo "Demo mask:    $demo/mask.tif"
echo "Preview PNG:  $demo/mask_preview.png"
echo "Nimbus CLI:   ./build/nimbus --help"
