// Whole rasters to and from plain memory: the bridge for callers holding arrays
// (the Python API). Any GDAL path works, including /vsimem/.
#pragma once

#include <optional>
#include <string>

#include "nimbus/raster/raster_reader.h"

namespace nimbus {

struct RasterLayout {
  int bands = 0;
  int height = 0;
  int width = 0;
  std::string data_type;  // GDAL name: Byte, UInt16, Int16, UInt32, Int32, Float32, Float64
  GridInfo grid;
  std::optional<double> nodata;  // of band 1
};

// `crs` as the user gives it: "EPSG:32631", WKT or PROJ text; empty = none.
// Throws InputError naming `role` when GDAL cannot parse it.
std::string crs_to_wkt(const std::string& crs, const std::string& role);

// Writes band-major data (bands x height x width of `data_type`) as a GeoTIFF.
void write_array_raster(const std::string& path, const std::string& role, const void* data,
                        const RasterLayout& layout);

// Size, type, grid and nodata of a raster.
RasterLayout read_raster_layout(const std::string& path, const std::string& role);

// Reads every band, band-major, in the file's own data type, into `data` (which
// holds bands x height x width values of layout.data_type).
void read_array_raster(const std::string& path, const std::string& role, const RasterLayout& layout, void* data);

}  // namespace nimbus
