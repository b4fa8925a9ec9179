#include "nimbus/raster/area_of_interest.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include <fmt/format.h>
#include <gdal_alg.h>
#include <gdal_priv.h>
#include <ogr_geometry.h>
#include <ogr_spatialref.h>

#include "nimbus/core/error.h"
#include "nimbus/raster/gdal_handles.h"
#include "nimbus/parameters.h"

namespace nimbus {

GridInfo window_grid(const GridInfo& grid, const PixelWindow& window) {
  GridInfo g = grid;
  g.width = window.width;
  g.height = window.height;
  const auto& t = grid.geotransform;
  g.geotransform[0] = t[0] + window.x0 * t[1] + window.y0 * t[2];
  g.geotransform[3] = t[3] + window.x0 * t[4] + window.y0 * t[5];
  return g;
}

namespace {

template <typename Buffer>
Buffer crop_buffer(const Buffer& buffer, int width, const PixelWindow& w) {
  Buffer out(static_cast<std::size_t>(w.width) * static_cast<std::size_t>(w.height));
  for (int r = 0; r < w.height; ++r) {
    const auto src = buffer.begin() + static_cast<std::ptrdiff_t>(
                                          static_cast<std::size_t>(w.y0 + r) * static_cast<std::size_t>(width) +
                                          static_cast<std::size_t>(w.x0));
    std::copy(src, src + w.width, out.begin() + static_cast<std::ptrdiff_t>(r) * w.width);
  }
  return out;
}

}  // namespace

MaskBuffer crop(const MaskBuffer& buffer, int width, const PixelWindow& window) {
  return crop_buffer(buffer, width, window);
}
FloatBuffer crop(const FloatBuffer& buffer, int width, const PixelWindow& window) {
  return crop_buffer(buffer, width, window);
}

struct AreaOfInterest::Geometry {
  struct Destroy {
    void operator()(OGRGeometry* g) const { OGRGeometryFactory::destroyGeometry(g); }
  };
  std::unique_ptr<OGRGeometry, Destroy> shape;
  OGRSpatialReference crs;
  std::string source;  // the parameter it came from, as @[name], for messages
};

namespace {

using GeometryPtr = std::unique_ptr<OGRGeometry, AreaOfInterest::Geometry::Destroy>;

[[noreturn]] void bad(const std::string& param, const std::string& what) {
  throw InputError(fmt::format("{} {}", param_ref(param), what));
}

// The geometries of a GeoJSON object (geometry, Feature or FeatureCollection), appended to `out`.
void collect_geojson(const Json& j, std::vector<GeometryPtr>& out) {
  if (!j.is_object() || !j.contains("type") || !j.at("type").is_string()) {
    bad("aoi", "is GeoJSON without a \"type\"; give a Polygon, MultiPolygon, Feature or FeatureCollection");
  }
  const std::string type = j.at("type").get<std::string>();
  if (type == "FeatureCollection") {
    if (!j.contains("features") || !j.at("features").is_array()) {
      bad("aoi", "is a GeoJSON FeatureCollection without a \"features\" array");
    }
    for (const Json& f : j.at("features")) collect_geojson(f, out);
    return;
  }
  if (type == "Feature") {
    if (!j.contains("geometry") || j.at("geometry").is_null()) bad("aoi", "is a GeoJSON Feature without a geometry");
    collect_geojson(j.at("geometry"), out);
    return;
  }
  GeometryPtr g(OGRGeometryFactory::createFromGeoJson(j.dump().c_str()));
  if (!g) {
    bad("aoi", fmt::format("holds a GeoJSON {} OGR cannot read ({}); check its coordinates", type,
                           CPLGetLastErrorMsg()));
  }
  out.push_back(std::move(g));
}

GeometryPtr parse_aoi_text(const std::string& text) {
  const auto first = text.find_first_not_of(" \t\r\n");
  if (first == std::string::npos) bad("aoi", "is empty; give a GeoJSON file, GeoJSON text or WKT");
  if (text[first] == '{') {
    Json j;
    try {
      j = Json::parse(text);
    } catch (const std::exception& e) {
      bad("aoi", fmt::format("is not valid GeoJSON ({}); give a GeoJSON file, GeoJSON text or WKT", e.what()));
    }
    std::vector<GeometryPtr> parts;
    collect_geojson(j, parts);
    if (parts.empty()) bad("aoi", "holds no geometry; give at least one Polygon");
    if (parts.size() == 1) return std::move(parts.front());
    GeometryPtr all(new OGRGeometryCollection());
    for (auto& p : parts) static_cast<OGRGeometryCollection*>(all.get())->addGeometryDirectly(p.release());
    return all;
  }
  OGRGeometry* g = nullptr;
  const char* wkt = text.c_str() + first;
  if (OGRGeometryFactory::createFromWkt(&wkt, nullptr, &g) != OGRERR_NONE || !g) {
    bad("aoi", fmt::format("'{}' is neither an existing file, GeoJSON text nor WKT; give e.g. a GeoJSON file "
                           "field.geojson or 'POLYGON((x y, ...))'",
                           text.size() > 60 ? text.substr(0, 60) + "..." : text));
  }
  return GeometryPtr(g);
}

GeometryPtr parse_bbox(const std::string& text) {
  std::vector<double> v;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    try {
      std::size_t used = 0;
      const double d = std::stod(item, &used);
      if (item.find_first_not_of(" \t", used) != std::string::npos || !std::isfinite(d)) throw std::invalid_argument("");
      v.push_back(d);
    } catch (const std::exception&) {
      v.clear();
      break;
    }
  }
  if (v.size() != 4 || !(v[0] < v[2]) || !(v[1] < v[3])) {
    bad("bbox", fmt::format("'{}' is not minx,miny,maxx,maxy with minx < maxx and miny < maxy; e.g. "
                            "{} 13.40,52.50,13.42,52.51",
                            text, param_ref("bbox")));
  }
  auto ring = std::make_unique<OGRLinearRing>();
  ring->addPoint(v[0], v[1]);
  ring->addPoint(v[2], v[1]);
  ring->addPoint(v[2], v[3]);
  ring->addPoint(v[0], v[3]);
  ring->closeRings();
  auto polygon = std::make_unique<OGRPolygon>();
  polygon->addRingDirectly(ring.release());
  return GeometryPtr(polygon.release());
}

}  // namespace

AreaOfInterest::AreaOfInterest(std::unique_ptr<Geometry> geometry) : geometry_(std::move(geometry)) {}
AreaOfInterest::~AreaOfInterest() = default;
AreaOfInterest::AreaOfInterest(AreaOfInterest&&) noexcept = default;
AreaOfInterest& AreaOfInterest::operator=(AreaOfInterest&&) noexcept = default;

AreaOfInterest AreaOfInterest::parse(const std::string& aoi, const std::string& bbox, const std::string& crs) {
  const GdalErrorScope quiet;
  if (!aoi.empty() && !bbox.empty()) {
    throw InputError(fmt::format("{} and {} are both given; pass one of them", param_ref("aoi"), param_ref("bbox")));
  }
  auto g = std::make_unique<Geometry>();
  g->source = param_ref(aoi.empty() ? "bbox" : "aoi");
  if (aoi.empty()) {
    g->shape = parse_bbox(bbox);
  } else {
    std::error_code ec;
    const bool is_file = aoi.size() < 4096 && aoi.find('\n') == std::string::npos &&
                         std::filesystem::is_regular_file(aoi, ec);
    if (is_file) {
      std::ifstream in(aoi, std::ios::binary);
      std::stringstream text;
      text << in.rdbuf();
      if (!in) bad("aoi", fmt::format("file '{}' could not be read; check its permissions", aoi));
      g->shape = parse_aoi_text(text.str());
    } else {
      g->shape = parse_aoi_text(aoi);
    }
  }
  const OGRwkbGeometryType type = wkbFlatten(g->shape->getGeometryType());
  const bool areal = type == wkbPolygon || type == wkbMultiPolygon ||
                     (type == wkbGeometryCollection && g->shape->toGeometryCollection()->getNumGeometries() > 0);
  if (!areal || g->shape->IsEmpty()) {
    throw InputError(fmt::format("{} is a {}; give a non-empty Polygon or MultiPolygon (or {})", g->source,
                                 OGRGeometryTypeToName(g->shape->getGeometryType()), param_ref("bbox")));
  }
  if (!g->shape->IsValid()) {
    throw InputError(fmt::format("{} is an invalid polygon (self-intersecting or unclosed ring); fix it, e.g. with "
                                 "ogr2ogr -makevalid",
                                 g->source));
  }
  if (g->crs.SetFromUserInput(crs.c_str()) != OGRERR_NONE) {
    throw InputError(fmt::format("{} '{}' is not a CRS GDAL/OGR knows; give e.g. EPSG:4326 or EPSG:32633",
                                 param_ref("aoi_crs"), crs));
  }
  g->crs.SetAxisMappingStrategy(OAMS_TRADITIONAL_GIS_ORDER);
  return AreaOfInterest(std::move(g));
}

std::unique_ptr<AreaOfInterest::Geometry> AreaOfInterest::in_crs_of(const GridInfo& grid) const {
  auto out = std::make_unique<Geometry>();
  out->source = geometry_->source;
  if (grid.crs_wkt.empty() || !grid.has_geotransform) {
    throw InputError(fmt::format("{} cannot be placed: the raster has no CRS or geotransform; drop {} or "
                                 "georeference the raster (gdal_edit.py -a_srs -a_ullr)",
                                 geometry_->source, geometry_->source));
  }
  if (out->crs.SetFromUserInput(grid.crs_wkt.c_str()) != OGRERR_NONE) {
    throw InputError(fmt::format("{} cannot be placed: the raster's CRS is not understood by OGR", out->source));
  }
  out->crs.SetAxisMappingStrategy(OAMS_TRADITIONAL_GIS_ORDER);
  out->shape.reset(geometry_->shape->clone());
  std::unique_ptr<OGRCoordinateTransformation> transform(
      OGRCreateCoordinateTransformation(&geometry_->crs, &out->crs));
  if (!transform || out->shape->transform(transform.get()) != OGRERR_NONE) {
    throw InputError(fmt::format("{} could not be reprojected from {} to the raster's CRS ({}); check "
                                 "{} and that the coordinates are in that CRS",
                                 out->source, param_ref("aoi_crs"), CPLGetLastErrorMsg(), param_ref("aoi_crs")));
  }
  return out;
}

PixelWindow AreaOfInterest::pixel_window(const GridInfo& grid, const std::string& raster_name) const {
  const GdalErrorScope quiet;
  const auto placed = in_crs_of(grid);
  OGREnvelope env;
  placed->shape->getEnvelope(&env);
  double inverse[6];
  if (!GDALInvGeoTransform(const_cast<double*>(grid.geotransform.data()), inverse)) {
    throw InputError(fmt::format("{} cannot be placed: the raster's geotransform is not invertible", placed->source));
  }
  double px_min = HUGE_VAL, px_max = -HUGE_VAL, py_min = HUGE_VAL, py_max = -HUGE_VAL;
  for (const double x : {env.MinX, env.MaxX}) {
    for (const double y : {env.MinY, env.MaxY}) {
      const double px = inverse[0] + x * inverse[1] + y * inverse[2];
      const double py = inverse[3] + x * inverse[4] + y * inverse[5];
      px_min = std::min(px_min, px);
      px_max = std::max(px_max, px);
      py_min = std::min(py_min, py);
      py_max = std::max(py_max, py);
    }
  }
  // Every pixel the envelope overlaps (a polygon edge on a pixel edge takes no extra pixel).
  const auto lo = [](double v) { return std::floor(v); };
  const auto hi = [](double v) { return std::ceil(v); };
  const double x0 = std::max(0.0, lo(px_min)), y0 = std::max(0.0, lo(py_min));
  const double x1 = std::min(static_cast<double>(grid.width), std::max(hi(px_max), lo(px_min) + 1));
  const double y1 = std::min(static_cast<double>(grid.height), std::max(hi(py_max), lo(py_min) + 1));
  if (!(x1 > x0) || !(y1 > y0)) {
    throw InputError(fmt::format("{} does not overlap {} (it falls at pixels x {:.0f}..{:.0f}, y {:.0f}..{:.0f} of a "
                                 "{}x{} raster); check the coordinates and {}",
                                 placed->source, raster_name, px_min, px_max, py_min, py_max, grid.width, grid.height,
                                 param_ref("aoi_crs")));
  }
  return PixelWindow{static_cast<int>(x0), static_cast<int>(y0), static_cast<int>(x1 - x0),
                     static_cast<int>(y1 - y0)};
}

MaskBuffer AreaOfInterest::inside_mask(const GridInfo& grid, const PixelWindow& window) const {
  const GdalErrorScope quiet;
  const auto placed = in_crs_of(grid);
  GDALDriver* mem = GetGDALDriverManager()->GetDriverByName("MEM");
  if (!mem) throw InternalError("GDAL's MEM driver is missing");
  GdalDatasetPtr ds(mem->Create("", window.width, window.height, 1, GDT_Byte, nullptr));
  if (!ds) throw InternalError(fmt::format("could not create a {}x{} in-memory raster", window.width, window.height));
  GridInfo g = window_grid(grid, window);
  ds->SetGeoTransform(g.geotransform.data());
  int band = 1;
  double burn = 1.0;
  OGRGeometryH shape = OGRGeometry::ToHandle(placed->shape.get());
  if (GDALRasterizeGeometries(GDALDataset::ToHandle(ds.get()), 1, &band, 1, &shape, nullptr, nullptr, &burn, nullptr,
                              nullptr, nullptr) != CE_None) {
    throw InternalError(fmt::format("rasterizing the area of interest failed: {}", CPLGetLastErrorMsg()));
  }
  MaskBuffer inside(static_cast<std::size_t>(window.width) * static_cast<std::size_t>(window.height));
  if (ds->GetRasterBand(1)->RasterIO(GF_Read, 0, 0, window.width, window.height, inside.data(), window.width,
                                     window.height, GDT_Byte, 0, 0) != CE_None) {
    throw InternalError(fmt::format("reading the rasterized area of interest failed: {}", CPLGetLastErrorMsg()));
  }
  return inside;
}

std::string AreaOfInterest::wkt_in_crs_of(const GridInfo& grid) const {
  const GdalErrorScope quiet;
  const auto placed = in_crs_of(grid);
  char* wkt = nullptr;
  if (placed->shape->exportToWkt(&wkt) != OGRERR_NONE || !wkt) {
    CPLFree(wkt);
    throw InternalError("the area of interest could not be written as WKT");
  }
  std::string text = wkt;
  CPLFree(wkt);
  return text;
}

}  // namespace nimbus
