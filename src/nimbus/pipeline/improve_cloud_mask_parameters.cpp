#include "nimbus/pipeline/improve_cloud_mask_parameters.h"

#include <functional>
#include <vector>

#include <fmt/format.h>

#include "nimbus/models/default_models.h"
#include "nimbus/ops/registry.h"

namespace nimbus {
namespace {

using Options = ImproveCloudMaskOptions;

// Help headings besides the role-derived Inputs, Outputs and Parameters.
const char* const kAreaOfInterest = "Area of interest";
const char* const kPerformance = "Performance";

// One declared parameter and where its value lives in the options.
struct Binding {
  ParamSpec spec;
  std::function<void(Options&, const Json&)> set;  // value already checked against spec
  std::function<Json(const Options&)> get;
  // For input paths in the batch recipe: what an unset value stands for.
  std::string unset_identity;
};

// A parameter of one of the workflow's ops, exposed under the workflow's name.
ParamSpec from_op(const char* op_name, const char* op_parameter, const char* name) {
  const OpDefinition* op = find_op(op_name);
  const ParamSpec* spec = op ? op->parameter(op_parameter) : nullptr;
  if (!spec) throw InternalError(fmt::format("op {} declares no parameter {}", op_name, op_parameter));
  ParamSpec renamed = *spec;
  renamed.name = name;
  return renamed;
}

template <typename T>
Binding field(ParamSpec spec, T Options::*member) {
  return {std::move(spec), [member](Options& o, const Json& v) { o.*member = v.get<T>(); },
          [member](const Options& o) { return Json(o.*member); }, {}};
}

template <typename Group, typename T>
Binding field(ParamSpec spec, Group Options::*group, T Group::*member) {
  return {std::move(spec), [group, member](Options& o, const Json& v) { (o.*group).*member = v.get<T>(); },
          [group, member](const Options& o) { return Json((o.*group).*member); }, {}};
}

// An optional path: empty in the options when not given, null as a value.
Binding path(ParamSpec spec, std::string Options::*member, std::string unset_identity = {}) {
  return {std::move(spec), [member](Options& o, const Json& v) { o.*member = v.is_null() ? "" : v.get<std::string>(); },
          [member](const Options& o) { return (o.*member).empty() ? Json() : Json(o.*member); },
          std::move(unset_identity)};
}

ParamSpec model_parameter(const char* op_name, const char* name, const EmbeddedModel& embedded, const char* example) {
  ParamSpec spec = from_op(op_name, "model_path", name);
  spec.type = ParamType::Path;
  spec.role = ParamRole::Input;
  spec.default_value = nullptr;  // the embedded model
  spec.group = "Models";
  spec.help = fmt::format("{} ONNX model (e.g. FarmVibes {}); default: embedded {}",
                          std::string(name) == "cloud_model" ? "Cloud" : "Shadow", example, embedded.name);
  return spec;
}

const std::vector<Binding>& bindings() {
  static const std::vector<Binding> all = [] {
    const char* cloud = "compute_cloud_prob";
    const char* merge = "merge_cloud_masks_simple";
    std::vector<Binding> b;
    b.push_back(path(ParamSpec{"s2_raster", ParamType::Path, nullptr,
                               "12-band L2A stack (B01..B12 without B10, nodata 0), an L2A SAFE product "
                               "(directory, .zip or MTD_MSIL2A.xml; GDAL paths such as /vsicurl/ work), or an L2A "
                               "STAC item (JSON file or http(s) URL)"}
                         .mandatory()
                         .as(ParamRole::Input)
                         .affecting_output(),
                     &Options::s2_raster));
    b.push_back(path(ParamSpec{"product_mask", ParamType::Path, nullptr,
                               "Product cloud mask on the same grid (non-zero = cloud); derived from a SAFE product "
                               "when omitted"}
                         .as(ParamRole::Input)
                         .affecting_output(),
                     &Options::product_mask, "derived"));
    b.push_back(path(ParamSpec{"out", ParamType::Path, nullptr,
                               "Output mask GeoTIFF (uint8: 0 clear, 1 cloud or shadow; nodata as nodata_value says)"}
                         .mandatory()
                         .as(ParamRole::Output),
                     &Options::out));
    b.push_back(path(model_parameter(cloud, "cloud_model", default_cloud_model(), "cloud_model2_cpu.onnx")
                         .affecting_output(),
                     &Options::cloud_model, default_model_ref(default_cloud_model())));
    b.push_back(path(model_parameter("compute_shadow_prob", "shadow_model", default_shadow_model(), "shadow.onnx")
                         .affecting_output(),
                     &Options::shadow_model, default_model_ref(default_shadow_model())));
    b.push_back(field(from_op(merge, "cloud_prob_threshold", "cloud_thr"), &Options::merge,
                      &MergeParams::cloud_prob_threshold));
    b.push_back(field(from_op(merge, "shadow_prob_threshold", "shadow_thr"), &Options::merge,
                      &MergeParams::shadow_prob_threshold));
    b.push_back(field(from_op(merge, "closing_size", "closing_size"), &Options::merge, &MergeParams::closing_size));
    b.push_back(field(from_op(merge, "min_area", "min_area"), &Options::merge, &MergeParams::min_area));
    b.push_back(field(from_op(cloud, "window_size", "window"), &Options::chips, &ChipPredictionParams::window_size));
    b.push_back(field(from_op(cloud, "overlap", "overlap"), &Options::chips, &ChipPredictionParams::overlap));
    b.push_back(field(from_op(cloud, "downsampling", "downsampling"), &Options::chips,
                      &ChipPredictionParams::downsampling));
    b.push_back({ParamSpec{"blend", ParamType::String, "midpoint",
                           "How chip overlaps combine: midpoint (FarmVibes, exact) or linear (feathered ramps)"}
                     .one_of({"midpoint", "linear"})
                     .affecting_output()
                     .tagged("NIMBUS_BLEND"),
                 [](Options& o, const Json& v) {
                   o.chips.blend = v.get<std::string>() == "linear" ? ChipBlend::Linear : ChipBlend::Midpoint;
                 },
                 [](const Options& o) { return Json(o.chips.blend == ChipBlend::Linear ? "linear" : "midpoint"); },
                 {}});
    b.push_back({ParamSpec{"aoi", ParamType::String, nullptr,
                           "Area of interest: a GeoJSON file, GeoJSON text (geometry, Feature or FeatureCollection) "
                           "or WKT polygon, in aoi_crs; only the chips it needs run and only its pixel window is "
                           "written (exclusive with bbox)"}
                     .affecting_output()
                     .in_group(kAreaOfInterest),
                 [](Options& o, const Json& v) { o.aoi = v.is_null() ? "" : v.get<std::string>(); },
                 [](const Options& o) { return o.aoi.empty() ? Json() : Json(o.aoi); },
                 {}});
    b.push_back({ParamSpec{"bbox", ParamType::String, nullptr,
                           "Area of interest as minx,miny,maxx,maxy in aoi_crs (exclusive with aoi)"}
                     .affecting_output()
                     .in_group(kAreaOfInterest),
                 [](Options& o, const Json& v) { o.bbox = v.is_null() ? "" : v.get<std::string>(); },
                 [](const Options& o) { return o.bbox.empty() ? Json() : Json(o.bbox); },
                 {}});
    b.push_back(field(ParamSpec{"aoi_crs", ParamType::String, "EPSG:4326",
                                "CRS of aoi/bbox coordinates: anything GDAL/OGR understands (EPSG:32633, WKT, PROJ); "
                                "x/y in GIS order (longitude first)"}
                          .affecting_output()
                          .in_group(kAreaOfInterest),
                      &Options::aoi_crs));
    b.push_back(field(ParamSpec{"crop_to_aoi", ParamType::Bool, false,
                                "Set pixels of the written window whose centre lies outside the aoi polygon to nodata "
                                "(100, or nodata_value)"}
                          .affecting_output()
                          .in_group(kAreaOfInterest),
                      &Options::crop_to_aoi));
    b.push_back({ParamSpec{"nodata_value", ParamType::Int, nullptr,
                           "Write no-data pixels of the mask as this value and tag it as the mask's nodata (e.g. "
                           "255); 0 and 1 are the mask's classes. Default: FarmVibes' mask, no-data pixels written as "
                           "1 (masked) with nodata tag 100",
                           2.0, 255.0}
                     .affecting_output()
                     .tagged("NIMBUS_NODATA_VALUE")
                     .in_group("Outputs"),
                 [](Options& o, const Json& v) {
                   o.nodata_value = v.is_null() ? std::nullopt : std::optional<int>(v.get<int>());
                 },
                 [](const Options& o) { return o.nodata_value ? Json(*o.nodata_value) : Json(); },
                 {}});
    b.push_back(field(from_op(cloud, "in_memory", "in_memory").in_group(kPerformance), &Options::chips,
                      &ChipPredictionParams::in_memory));
    // The engines agree to 1e-4, yet a mask may differ in a few pixels: a batch
    // re-runs a scene finished with the other engine.
    b.push_back({from_op(cloud, "engine", "engine").affecting_output().in_group(kPerformance),
                 [](Options& o, const Json& v) { o.engine = parse_engine(v.get<std::string>(), param_ref("engine")); },
                 [](const Options& o) { return Json(engine_name(o.engine)); },
                 {}});
    b.push_back(field(ParamSpec{"threads", ParamType::Int, 0, "Worker threads (0 = all cores, at most 1024)", 0.0,
                                static_cast<double>(kMaxThreads)}
                          .in_group(kPerformance),
                      &Options::threads));
    b.push_back(field(ParamSpec{"creation_options", ParamType::StringList, Json::array(),
                                "GDAL COG creation option KEY=VALUE for the written rasters (repeatable), e.g. "
                                "COMPRESS=DEFLATE"}
                          .affecting_output()
                          .on_cli_as("--co")
                          .in_group("Outputs"),
                      &Options::creation_options));
    b.push_back(path(ParamSpec{"keep_probabilities", ParamType::Path, nullptr,
                               "Also write cloud_probability.tif and shadow_probability.tif into this directory"}
                         .as(ParamRole::Output),
                     &Options::keep_probabilities_dir));
    b.push_back(path(ParamSpec{"preview", ParamType::Path, nullptr,
                               "Also write a PNG quicklook (true colour; cloud magenta, shadow yellow, no data "
                           "grey-hatched; legend strip below) with a world file (.pgw) and .aux.xml (CRS); '-' "
                               "writes the PNG alone to standard output"}
                         .as(ParamRole::Output),
                     &Options::preview_png));
    b.push_back(path(ParamSpec{"report", ParamType::Path, nullptr,
                               "Also write timings, chip counts and peak memory as JSON here ('-': standard output)"}
                         .as(ParamRole::Output),
                     &Options::report_path));
    b.push_back(path(ParamSpec{"stac_out", ParamType::Path, nullptr,
                               "Also write a STAC Item (JSON) describing the mask here: footprint, datetime, "
                               "projection, checksum, eo:cloud_cover, provenance"}
                         .as(ParamRole::Output),
                     &Options::stac_out));
    b.push_back(field(ParamSpec{"overwrite", ParamType::Bool, false,
                                "Replace existing output files; without it an existing output is refused before any "
                                "work"}
                          .in_group("Outputs"),
                      &Options::overwrite));
    return b;
  }();
  return all;
}

}  // namespace

const OperationSpec& improve_cloud_mask_operation() {
  static const OperationSpec spec = [] {
    OperationSpec s;
    s.name = "improve-cloud-mask";
    s.description =
        "Cloud + shadow models over a Sentinel-2 L2A raster, merged with the product mask (FarmVibes "
        "data_ingestion/sentinel2/improve_cloud_mask)";
    for (const Binding& b : bindings()) s.parameters.push_back(b.spec);
    return s;
  }();
  return spec;
}

ImproveCloudMaskOptions improve_cloud_mask_options(const Json& values) {
  const Json resolved = resolve_parameters(improve_cloud_mask_operation().parameters, values);
  Options o;
  for (const Binding& b : bindings()) b.set(o, resolved.at(b.spec.name));
  return o;
}

ImproveCloudMaskOptions batch_options(Json values) {
  for (const char* per_scene : {"s2_raster", "product_mask", "out"}) {
    if (values.contains(per_scene)) {
      throw ParameterError(per_scene, "is given per scene (in the scene list), not as a batch option");
    }
  }
  if (values.contains("stac_out") && !values["stac_out"].is_null()) {
    throw ParameterError("stac_out", "names one file, but a batch writes one STAC Item per scene; ask the batch "
                                     "for <id>.json items next to the masks instead (nimbus batch --stac-items, "
                                     "nimbus.batch(..., stac_items=True))");
  }
  // Required for one scene; a batch sets them scene by scene.
  values["s2_raster"] = values["out"] = "(per scene)";
  return improve_cloud_mask_options(values);
}

Json improve_cloud_mask_values(const ImproveCloudMaskOptions& options) {
  Json values = Json::object();
  for (const Binding& b : bindings()) values[b.spec.name] = b.get(options);
  return values;
}

std::map<std::string, std::string> parameter_tags(const ImproveCloudMaskOptions& options) {
  std::map<std::string, std::string> tags;
  for (const Binding& b : bindings()) {
    if (!b.spec.tag.empty()) tags[b.spec.tag] = parameter_text(b.get(options));
  }
  return tags;
}

Json output_recipe(const ImproveCloudMaskOptions& options,
                   const std::function<std::string(const std::string& path)>& file_identity) {
  Json recipe = Json::object();
  for (const Binding& b : bindings()) {
    if (!b.spec.affects_output) continue;
    const Json value = b.get(options);
    if (b.spec.role != ParamRole::Input) {
      recipe[b.spec.name] = value;
    } else if (value.is_null()) {
      recipe[b.spec.name] = b.unset_identity;
    } else {
      const std::string& text = value.get_ref<const std::string&>();
      // Embedded models are identified by name; files by path, size and time.
      recipe[b.spec.name] = text.rfind("embedded:", 0) == 0 ? text : file_identity(text);
    }
  }
  return recipe;
}

}  // namespace nimbus
