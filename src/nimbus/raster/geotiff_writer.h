// Writing single-band rasters as Cloud Optimized GeoTIFFs with FarmVibes'
// compression settings, overviews and provenance tags.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "nimbus/core/error.h"
#include "nimbus/raster/raster_reader.h"

namespace nimbus {

enum class SampleType { UInt8, Float32 };

struct GeoTiffOptions {
  SampleType type = SampleType::UInt8;
  std::optional<double> nodata;
  bool floating_point_predictor = false;  // FarmVibes: predictor 3 for floats, 2 for integers
  std::string overview_resampling = "NEAREST";
  std::map<std::string, std::string> metadata;  // dataset-level tags (provenance)
  // GDAL COG creation options (KEY=VALUE, as gdal_translate -co) overriding the defaults
  // COMPRESS=ZSTD LEVEL=9 PREDICTOR=… BLOCKSIZE=256 OVERVIEWS=AUTO BIGTIFF=IF_SAFER.
  std::vector<std::string> creation_options;
  CancelCheck cancel;  // polled by GDAL while writing; true stops the write (throws Cancelled)
};

// FarmVibes' probability rasters: float32, nodata 100, ZSTD 9, floating-point predictor.
GeoTiffOptions probability_geotiff_options();
// FarmVibes' merged mask: uint8, nodata tag 100, ZSTD 9, horizontal predictor.
GeoTiffOptions mask_geotiff_options();

// Throws InputError for a malformed or unknown creation option, a value GDAL's COG
// driver refuses, and values Nimbus refuses (BLOCKSIZE outside 128..4096 or not a
// multiple of 16, lossy compression, reprojection): checked before any work.
void validate_creation_options(const std::vector<std::string>& options);

// Writes `data` (grid.width*grid.height samples of options.type, row-major) as
// a COG with grid's transform and CRS at `path`. `role` names the output in
// error messages. Throws InputError on any write failure.
void write_single_band_geotiff(const std::string& path, const std::string& role, const GridInfo& grid,
                               const void* data, const GeoTiffOptions& options);

}  // namespace nimbus
