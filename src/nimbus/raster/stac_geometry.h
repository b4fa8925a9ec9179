// Where a written raster lies, in the terms STAC Items use: its footprint in WGS 84
// (geometry and bbox) and the projection extension's fields.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "nimbus/raster/raster_reader.h"

namespace nimbus {

class AreaOfInterest;

struct Wgs84Footprint {
  nlohmann::json geometry;  // GeoJSON Polygon or MultiPolygon, longitude/latitude
  nlohmann::json bbox;      // [west, south, east, north]
};

// The outline of `grid` (edges densified, so a reprojected edge stays close to the
// raster's), clipped to `aoi` when one is given, in WGS 84. Throws InputError when
// the grid has no CRS or geotransform (nothing to say where the raster lies).
Wgs84Footprint wgs84_footprint(const GridInfo& grid, const AreaOfInterest* aoi, const std::string& role);

// The projection extension (v1.1.0) fields of `grid`: proj:epsg (null when the CRS has
// no EPSG code, then proj:wkt2 is given), proj:shape [rows, columns], proj:transform (the
// affine a, b, c, d, e, f of the GDAL geotransform) and proj:bbox in the grid's CRS.
nlohmann::json stac_projection_fields(const GridInfo& grid);

}  // namespace nimbus
