// Writing single-band GeoTIFFs with FarmVibes' creation options.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "nimbus/raster/raster_reader.h"

namespace nimbus {

enum class SampleType { UInt8, Float32 };

struct GeoTiffOptions {
  SampleType type = SampleType::UInt8;
  std::optional<double> nodata;
  int predictor = 2;  // 2 for integers, 3 for floats, as FarmVibes' INT/FLOAT_COMPRESSION_KWARGS
  int zstd_level = 9;
};

// FarmVibes' probability rasters: float32, nodata 100, ZSTD 9, predictor 3.
GeoTiffOptions probability_geotiff_options();
// FarmVibes' merged mask: uint8, nodata tag 100, ZSTD 9, predictor 2.
GeoTiffOptions mask_geotiff_options();

// Writes `data` (grid.width*grid.height samples of options.type, row-major) as
// a tiled, ZSTD-compressed GeoTIFF with grid's transform and CRS at `path`.
// `role` names the output in error messages. Throws InputError on any write failure.
void write_single_band_geotiff(const std::string& path, const std::string& role, const GridInfo& grid,
                               const void* data, const GeoTiffOptions& options);

}  // namespace nimbus
