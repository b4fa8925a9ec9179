// Area of interest: a polygon (GeoJSON, WKT or a bounding box, in any CRS) placed on
// a raster's pixel grid, so a run can compute and write only the pixels a field needs.
#pragma once

#include <memory>
#include <string>

#include "nimbus/core/large_buffer.h"
#include "nimbus/raster/raster_reader.h"
#include "nimbus/tiling/pixel_window.h"

class OGRGeometry;

namespace nimbus {

// The grid of `window` cut out of `grid`: same CRS, geotransform moved to the window's origin.
GridInfo window_grid(const GridInfo& grid, const PixelWindow& window);

// Rows y0..y1, columns x0..x1 of a row-major buffer of row length `width`.
MaskBuffer crop(const MaskBuffer& buffer, int width, const PixelWindow& window);
FloatBuffer crop(const FloatBuffer& buffer, int width, const PixelWindow& window);

// A polygon and the CRS its coordinates are in. Owns its OGR geometry.
class AreaOfInterest {
 public:
  // Exactly one of `aoi` (a GeoJSON file, GeoJSON text - a geometry, Feature or
  // FeatureCollection - or WKT) and `bbox` ("minx,miny,maxx,maxy") is non-empty.
  // `crs` is any definition OGR understands (EPSG:32633, a WKT, a PROJ string);
  // x/y are in that CRS's traditional GIS order (longitude first for EPSG:4326).
  // Throws InputError naming @[aoi], @[bbox] or @[aoi_crs] and the fix.
  static AreaOfInterest parse(const std::string& aoi, const std::string& bbox, const std::string& crs);

  ~AreaOfInterest();
  AreaOfInterest(AreaOfInterest&&) noexcept;
  AreaOfInterest& operator=(AreaOfInterest&&) noexcept;

  // The pixels of `grid` the polygon's envelope (reprojected to the grid's CRS)
  // touches, snapped outward to whole pixels and clamped to the raster. Throws
  // InputError when the polygon misses the raster or the grid has no CRS.
  PixelWindow pixel_window(const GridInfo& grid, const std::string& raster_name) const;

  // Per pixel of `window` on `grid`: 1 where the pixel's centre lies inside the
  // polygon (GDAL's rasterisation rule), else 0.
  MaskBuffer inside_mask(const GridInfo& grid, const PixelWindow& window) const;

  // The polygon in `grid`'s CRS, as WKT.
  std::string wkt_in_crs_of(const GridInfo& grid) const;

 // The OGR geometry and its CRS (defined in the source).
  struct Geometry;

 private:
  explicit AreaOfInterest(std::unique_ptr<Geometry> geometry);
  // The polygon in `grid`'s CRS (a new geometry owned by the returned Geometry).
  std::unique_ptr<Geometry> in_crs_of(const GridInfo& grid) const;
  std::unique_ptr<Geometry> geometry_;
};

}  // namespace nimbus
