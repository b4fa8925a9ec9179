// Writing single-band rasters as Cloud Optimized GeoTIFFs with FarmVibes'
// compression settings, overviews and provenance tags.
#pragma once

#include <array>
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
  std::string band_description;                 // what the band holds, shown by GDAL, rasterio and QGIS
  std::string unit;                             // the band's unit type
  std::vector<std::array<std::uint8_t, 4>> color_table;  // RGBA per value (uint8 only); empty: none
  // GDAL COG creation options (KEY=VALUE, as gdal_translate -co) overriding the defaults
  // COMPRESS=ZSTD LEVEL=9 PREDICTOR=… BLOCKSIZE=256 OVERVIEWS=AUTO BIGTIFF=IF_SAFER.
  std::vector<std::string> creation_options;
  CancelCheck cancel;  // polled by GDAL while writing; true stops the write (throws Cancelled)
};

// FarmVibes' probability rasters: float32, nodata 100, ZSTD 9, floating-point predictor.
GeoTiffOptions probability_geotiff_options();
// FarmVibes' merged mask: uint8, nodata tag 100, ZSTD 9, horizontal predictor.
GeoTiffOptions mask_geotiff_options();

// The mask's classes as a reader sees them: 0 clear, 1 cloud or shadow, nodata_value no data.
inline constexpr std::uint8_t kMaskClear = 0;
inline constexpr std::uint8_t kMaskCloudOrShadow = 1;
// FarmVibes' nodata tag of the mask: a value that never occurs (no-data pixels are 1).
inline constexpr std::uint8_t kFarmVibesMaskNodata = 100;

// Presentation of a mask whose no-data pixels hold (and are tagged) `nodata_value`:
// band description and colour table (clear black, cloud or shadow magenta, nodata
// grey) added to `options`.
void describe_mask_band(GeoTiffOptions& options, std::uint8_t nodata_value, bool nodata_pixels_are_masked);

// The mask's category names as GDAL's .aux.xml sidecar (GDAL keeps category names of
// a GeoTIFF there): "clear", "cloud or shadow", and "nodata" at `nodata_value`.
std::string mask_category_names_aux_xml(std::uint8_t nodata_value);

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
