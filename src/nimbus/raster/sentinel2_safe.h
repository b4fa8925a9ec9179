// Sentinel-2 L2A SAFE products (directory, .zip or MTD_MSIL2A.xml) as a scene:
// the 12 FarmVibes bands stacked on the 10 m grid, the processing-baseline DN
// offset, and the product's own cloud mask.
#pragma once

#include <string>
#include <vector>

#include "nimbus/raster/gdal_handles.h"

namespace nimbus {

// B01..B12 without B10, FarmVibes' download_stack_sentinel2 order.
const std::vector<std::string>& farmvibes_band_order();

struct SafeScene {
  std::string product;              // the path given
  std::string stack_path;           // GDAL-openable 12-band VRT on the B02 (10 m) grid
  std::string processing_baseline;  // e.g. "04.00"; empty when not in the metadata
  std::vector<double> band_offsets; // BOA_ADD_OFFSET per stacked band (0 before baseline 04.00)
  std::string product_mask_path;    // GDAL-openable uint8 mask on the stack's grid (non-zero = cloud)
  std::string product_mask_source;  // "MSK_CLASSI", "MSK_CLOUDS GML", "SCL", or "none"
  VsimemFiles files;                // owns stack_path, product_mask_path and what they reference:
                                    // unlinked with the scene (close readers of them first)
};

// True for a *.SAFE directory, a directory or .zip holding MTD_MSIL2A.xml, or that file itself.
bool looks_like_sentinel2_safe(const std::string& path);

// Builds the stack and the product mask (in GDAL's in-memory filesystem, owned by
// the returned scene and gone with it; nothing is written to disk). Throws InputError naming the product and the missing part.
SafeScene open_sentinel2_safe(const std::string& path);

// Writes the 12-band stack as a COG (raw DN; the BOA offsets ride along as band
// metadata, which RasterReader applies), e.g. to inspect it or reuse it.
void write_safe_stack(const SafeScene& scene, const std::string& path, const std::string& role);

}  // namespace nimbus
