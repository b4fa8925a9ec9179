#include "nimbus/pipeline/mask_stac_item.h"

#include <chrono>
#include <ctime>
#include <filesystem>

#include <fmt/format.h>

#include "nimbus/pipeline/improve_cloud_mask_parameters.h"
#include "nimbus/raster/stac_geometry.h"
#include "nimbus/raster/stac_item.h"
#include "nimbus/version.h"

namespace nimbus {
namespace fs = std::filesystem;
namespace {

bool is_url(const std::string& s) { return s.rfind("http://", 0) == 0 || s.rfind("https://", 0) == 0; }

std::string utc_now() {
  const std::time_t now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  gmtime_r(&now, &tm);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return text;
}

// `target` as an href from the folder of `from`: relative when both are local files.
std::string href_from(const std::string& from, const std::string& target) {
  if (is_url(target) || target.rfind("/vsi", 0) == 0) return target;
  const fs::path base = fs::absolute(from).lexically_normal().parent_path();
  const fs::path relative = fs::absolute(target).lexically_normal().lexically_relative(base);
  if (relative.empty()) return fs::absolute(target).lexically_normal().string();
  const std::string text = relative.string();
  return text.rfind("../", 0) == 0 ? text : "./" + text;
}

// A local path absolute, a URL or GDAL path as given.
std::string absolute_location(const std::string& location) {
  if (is_url(location) || location.rfind("/vsi", 0) == 0) return location;
  return fs::absolute(location).lexically_normal().string();
}

}  // namespace

const std::vector<std::string>& mask_item_extensions() {
  static const std::vector<std::string> urls{
      "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
      "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
      "https://stac-extensions.github.io/file/v2.1.0/schema.json",
      "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
      "https://stac-extensions.github.io/classification/v1.1.0/schema.json",
      "https://stac-extensions.github.io/processing/v1.1.0/schema.json"};
  return urls;
}

Json mask_stac_item(const ImproveCloudMaskOptions& options, const ImproveCloudMaskReport& report,
                    const MaskItemFacts& facts) {
  const Wgs84Footprint footprint = wgs84_footprint(facts.grid, facts.aoi, "the output mask (@[out])");
  const std::string created = utc_now();

  Json properties = Json::object();
  if (!facts.datetime.empty()) {
    properties["datetime"] = facts.datetime;
    if (!facts.start_datetime.empty()) properties["start_datetime"] = facts.start_datetime;
    if (!facts.end_datetime.empty()) properties["end_datetime"] = facts.end_datetime;
  } else {
    // STAC needs a datetime, or null with a range. With no acquisition time known the
    // range is the moment the mask was made (docs/stac.md).
    properties["datetime"] = nullptr;
    properties["start_datetime"] = facts.start_datetime.empty() ? created : facts.start_datetime;
    properties["end_datetime"] = facts.end_datetime.empty() ? properties["start_datetime"] : Json(facts.end_datetime);
  }
  properties["created"] = created;
  properties.update(stac_projection_fields(facts.grid));
  properties["eo:cloud_cover"] = report.cloud_cover ? Json(*report.cloud_cover) : Json();
  properties["processing:software"] = {{"nimbus", kVersion}};
  properties["processing:lineage"] =
      "Cloud and shadow models over the Sentinel-2 L2A scene in overlapping chips, thresholded, OR-ed with the "
      "product's cloud mask, dilated and cleaned (FarmVibes improve_cloud_mask, reimplemented by Nimbus)";
  // The parameters that decide the mask's pixels; input files are named by the links and models by content.
  Json parameters = Json::object();
  const Json values = improve_cloud_mask_values(options);
  for (const ParamSpec& p : improve_cloud_mask_operation().parameters) {
    if (!p.affects_output || p.role == ParamRole::Input) continue;
    parameters[p.name] = values.at(p.name);
  }
  properties["nimbus:parameters"] = parameters;
  properties["nimbus:models"] = {
      {"cloud", {{"name", fs::path(report.cloud_model).filename().string()}, {"sha256", report.cloud_model_sha256},
                 {"engine", report.cloud_engine}}},
      {"shadow", {{"name", fs::path(report.shadow_model).filename().string()}, {"sha256", report.shadow_model_sha256},
                  {"engine", report.shadow_engine}}}};
  if (!report.aoi_window.empty()) properties["nimbus:aoi_window"] = report.aoi_window;

  Json asset = {
      {"href", href_from(facts.item_path, facts.mask_path)},
      {"type", "image/tiff; application=geotiff; profile=cloud-optimized"},
      {"title", "Cloud and cloud-shadow mask"},
      {"roles", {"data"}},
      {"file:size", facts.mask_bytes},
      {"file:checksum", "1220" + facts.mask_sha256},
      {"raster:bands", {{{"nodata", 100}, {"data_type", "uint8"},
                         {"spatial_resolution", std::abs(facts.grid.geotransform[1])}}}},
      {"classification:classes",
       {{{"value", 0}, {"name", "clear"}, {"description", "Neither cloud nor cloud shadow"}},
        {{"value", 1}, {"name", "cloud_or_shadow"}, {"description", "Cloud or cloud shadow (dilated)"}},
        {{"value", 100}, {"name", "no_data"}, {"description", "No valid input, or outside the area of interest"},
         {"nodata", true}}}}};

  Json links = Json::array();
  if (!facts.input_stac_item.empty()) {
    links.push_back({{"rel", "derived_from"},
                     {"href", absolute_location(facts.input_stac_item)},
                     {"type", "application/geo+json"},
                     {"title", "Sentinel-2 L2A item the mask was computed from"}});
  } else {
    // Not a STAC entity, so not derived_from: "via", the source of the information.
    links.push_back({{"rel", "via"},
                     {"href", absolute_location(options.s2_raster)},
                     {"title", "Sentinel-2 L2A input the mask was computed from"}});
  }
  if (!options.product_mask.empty()) {
    links.push_back({{"rel", "via"},
                     {"href", absolute_location(options.product_mask)},
                     {"title", "Product cloud mask merged into the mask"}});
  }

  std::string id = fs::path(facts.mask_path).stem().string();
  return {{"type", "Feature"},
          {"stac_version", "1.0.0"},
          {"stac_extensions", mask_item_extensions()},
          {"id", id},
          {"geometry", footprint.geometry},
          {"bbox", footprint.bbox},
          {"properties", properties},
          {"links", links},
          {"assets", {{"mask", asset}}}};
}

}  // namespace nimbus
