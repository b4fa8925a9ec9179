#include "nimbus/raster/stac_geometry.h"

#include <algorithm>
#include <array>
#include <memory>

#include <cpl_conv.h>
#include <fmt/format.h>
#include <ogr_api.h>
#include <ogr_geometry.h>
#include <ogr_spatialref.h>

#include "nimbus/core/error.h"
#include "nimbus/raster/area_of_interest.h"
#include "nimbus/raster/gdal_handles.h"

namespace nimbus {
namespace {

struct DestroyGeometry {
  void operator()(OGRGeometry* g) const { OGRGeometryFactory::destroyGeometry(g); }
};
using GeometryPtr = std::unique_ptr<OGRGeometry, DestroyGeometry>;

// Points per raster edge: a UTM tile's edges bend slightly in WGS 84.
constexpr int kEdgePoints = 16;

std::array<double, 2> at_pixel(const GridInfo& g, double col, double row) {
  const auto& t = g.geotransform;
  return {t[0] + col * t[1] + row * t[2], t[3] + col * t[4] + row * t[5]};
}

}  // namespace

Wgs84Footprint wgs84_footprint(const GridInfo& grid, const AreaOfInterest* aoi, const std::string& role) {
  ensure_gdal_initialised();
  const GdalErrorScope quiet;
  if (!grid.has_geotransform || grid.crs_wkt.empty()) {
    throw InputError(fmt::format("{} has no CRS or geotransform, so a STAC Item cannot say where it lies; "
                                 "georeference the input (gdal_edit.py -a_srs -a_ullr) or drop @[stac_out]",
                                 role));
  }
  OGRSpatialReference crs, wgs84;
  if (crs.SetFromUserInput(grid.crs_wkt.c_str()) != OGRERR_NONE) {
    throw InputError(fmt::format("{}: its CRS is not understood by OGR, so no STAC footprint can be given; drop "
                                 "@[stac_out]",
                                 role));
  }
  crs.SetAxisMappingStrategy(OAMS_TRADITIONAL_GIS_ORDER);
  wgs84.SetWellKnownGeogCS("WGS84");
  wgs84.SetAxisMappingStrategy(OAMS_TRADITIONAL_GIS_ORDER);

  auto ring = std::make_unique<OGRLinearRing>();
  const double w = grid.width, h = grid.height;
  const auto edge = [&](double c0, double r0, double c1, double r1) {
    for (int i = 0; i < kEdgePoints; ++i) {
      const double f = static_cast<double>(i) / kEdgePoints;
      const auto p = at_pixel(grid, c0 + (c1 - c0) * f, r0 + (r1 - r0) * f);
      ring->addPoint(p[0], p[1]);
    }
  };
  edge(0, 0, 0, h);  // counter-clockwise for a north-up raster (GeoJSON's right-hand rule)
  edge(0, h, w, h);
  edge(w, h, w, 0);
  edge(w, 0, 0, 0);
  ring->closeRings();
  auto polygon = std::make_unique<OGRPolygon>();
  polygon->addRingDirectly(ring.release());
  GeometryPtr shape(polygon.release());
  if (aoi) {
    OGRGeometry* parsed = nullptr;
    const std::string wkt = aoi->wkt_in_crs_of(grid);
    if (OGRGeometryFactory::createFromWkt(wkt.c_str(), nullptr, &parsed) != OGRERR_NONE || !parsed) {
      throw InternalError("the area of interest's WKT could not be read back");
    }
    GeometryPtr area(parsed);
    GeometryPtr clipped(shape->Intersection(area.get()));
    if (clipped && !clipped->IsEmpty()) shape = std::move(clipped);
  }
  std::unique_ptr<OGRCoordinateTransformation> to_wgs84(OGRCreateCoordinateTransformation(&crs, &wgs84));
  if (!to_wgs84 || shape->transform(to_wgs84.get()) != OGRERR_NONE) {
    throw InputError(fmt::format("{}: its outline cannot be reprojected to WGS 84 ({}); drop @[stac_out]", role,
                                 CPLGetLastErrorMsg()));
  }
  char* text = shape->exportToJson();
  if (!text) throw InternalError("the footprint could not be written as GeoJSON");
  Wgs84Footprint out;
  out.geometry = nlohmann::json::parse(text, nullptr, false);
  CPLFree(text);
  OGREnvelope env;
  shape->getEnvelope(&env);
  out.bbox = {env.MinX, env.MinY, env.MaxX, env.MaxY};
  return out;
}

nlohmann::json stac_projection_fields(const GridInfo& grid) {
  ensure_gdal_initialised();
  const GdalErrorScope quiet;
  nlohmann::json fields = nlohmann::json::object();
  fields["proj:epsg"] = nullptr;
  if (!grid.crs_wkt.empty()) {
    OGRSpatialReference crs;
    if (crs.SetFromUserInput(grid.crs_wkt.c_str()) == OGRERR_NONE) {
      crs.AutoIdentifyEPSG();
      const char* authority = crs.GetAuthorityName(nullptr);
      const char* code = crs.GetAuthorityCode(nullptr);
      if (authority && code && EQUAL(authority, "EPSG")) {
        fields["proj:epsg"] = std::atoi(code);
      } else {
        char* wkt = nullptr;
        const char* options[] = {"FORMAT=WKT2_2019", nullptr};
        if (crs.exportToWkt(&wkt, options) == OGRERR_NONE && wkt) fields["proj:wkt2"] = wkt;
        CPLFree(wkt);
      }
    }
  }
  fields["proj:shape"] = {grid.height, grid.width};
  if (grid.has_geotransform) {
    const auto& t = grid.geotransform;
    fields["proj:transform"] = {t[1], t[2], t[0], t[4], t[5], t[3]};
    double xs[4], ys[4];
    int i = 0;
    for (const double c : {0.0, static_cast<double>(grid.width)}) {
      for (const double r : {0.0, static_cast<double>(grid.height)}) {
        const auto p = at_pixel(grid, c, r);
        xs[i] = p[0];
        ys[i++] = p[1];
      }
    }
    fields["proj:bbox"] = {*std::min_element(xs, xs + 4), *std::min_element(ys, ys + 4),
                           *std::max_element(xs, xs + 4), *std::max_element(ys, ys + 4)};
  }
  return fields;
}

}  // namespace nimbus
