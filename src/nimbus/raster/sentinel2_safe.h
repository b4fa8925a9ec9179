// Sentinel-2 L2A SAFE products (directory, .zip or MTD_MSIL2A.xml) as a scene:
// the band files, processing baseline, DN offsets and product-mask layers found
// in the product, stacked by sentinel2_scene.h.
#pragma once

#include <string>

#include "nimbus/raster/sentinel2_scene.h"

namespace nimbus {

// True for a *.SAFE directory, a directory or .zip holding MTD_MSIL2A.xml, or that file itself.
bool looks_like_sentinel2_safe(const std::string& path);

// Finds the product's files and metadata. Throws InputError naming the product and the missing part.
Sentinel2BandFiles find_sentinel2_safe_files(const std::string& path);

// find_sentinel2_safe_files, then stack_sentinel2_bands.
Sentinel2Scene open_sentinel2_safe(const std::string& path);

}  // namespace nimbus
