#include "nimbus/pipeline/improve_cloud_mask.h"

#include <sys/resource.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <algorithm>
#include <optional>


#include <fmt/format.h>

#include "nimbus/core/error.h"
#include "nimbus/core/input_files.h"
#include "nimbus/core/log.h"
#include "nimbus/version.h"
#include "nimbus/inference/backend.h"
#include "nimbus/raster/gdal_handles.h"
#include "nimbus/models/default_models.h"
#include "nimbus/ops/compute_cloud_prob.h"
#include "nimbus/ops/compute_shadow_prob.h"
#include "nimbus/core/checksum.h"
#include "nimbus/ops/morphology.h"
#include "nimbus/pipeline/improve_cloud_mask_parameters.h"
#include "nimbus/pipeline/mask_stac_item.h"
#include "nimbus/raster/area_of_interest.h"
#include "nimbus/raster/atomic_output.h"
#include "nimbus/raster/geotiff_writer.h"
#include "nimbus/raster/preview.h"
#include "nimbus/raster/sentinel2_safe.h"
#include "nimbus/tiling/chip_grid.h"

namespace nimbus {
namespace {


using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Tells the caller's progress callback (if any) about chips and finished stages.
class ProgressEvents {
 public:
  explicit ProgressEvents(const ImproveCloudMaskOptions& options)
      : callback_(options.progress), cancel_(options.cancel), stage_start_(Clock::now()) {}

  ChipProgress chips() {
    return [this](int done, int total) {
      chips_done_ = done;
      chips_total_ = total;
      if (callback_) callback_(event(RunProgress::Stage::Chips));
      throw_if_cancelled(cancel_);
    };
  }

  // Ends `stage` (started when the previous one ended); returns its duration.
  double finished(RunProgress::Stage stage) {
    RunProgress p = event(stage);
    p.stage_finished = true;
    p.stage_seconds = seconds_since(stage_start_);
    stage_start_ = Clock::now();
    if (callback_) callback_(p);
    return p.stage_seconds;
  }

 private:
  RunProgress event(RunProgress::Stage stage) const {
    RunProgress p;
    p.stage = stage;
    p.chips_done = chips_done_;
    p.chips_total = chips_total_;
    return p;
  }

  const ProgressCallback& callback_;
  const CancelCheck& cancel_;
  Clock::time_point stage_start_;
  int chips_done_ = 0;
  int chips_total_ = 0;
};

// What the run reads; no output may be one of these or lie inside a SAFE product.
std::vector<RunInput> run_inputs(const ImproveCloudMaskOptions& o) {
  std::vector<RunInput> inputs{{o.s2_raster, "@[s2_raster]"},
                               {o.product_mask, "@[product_mask]"},
                               {o.cloud_model, "@[cloud_model]"},
                               {o.shadow_model, "@[shadow_model]"}};
  std::error_code ec;
  if (!o.aoi.empty() && o.aoi.find('\n') == std::string::npos && std::filesystem::is_regular_file(o.aoi, ec)) {
    inputs.push_back({o.aoi, "@[aoi]"});
  }
  const std::filesystem::path raster(o.s2_raster);
  if (raster.filename() == "MTD_MSIL2A.xml") {
    inputs.push_back({raster.parent_path().empty() ? "." : raster.parent_path().string(),
                      "@[s2_raster] (its SAFE product)"});
  }
  return inputs;
}

// Whether `path` + `suffix` is a file name the file system takes (with room for the
// temporary name's prefix); a sidecar of a very long output name is left out.
bool sidecar_fits(const std::string& path, const std::string& suffix) {
  const std::string name = std::filesystem::path(path + suffix).filename().string();
  return name.size() <= 255;
}

}  // namespace

const char* stage_name(RunProgress::Stage stage) {
  switch (stage) {
    case RunProgress::Stage::Prepare: return "prepare";
    case RunProgress::Stage::Chips: return "chips";
    case RunProgress::Stage::Merge: return "merge";
    case RunProgress::Stage::Write: return "write";
  }
  return "unknown";
}

Json component_versions() {
  return {{"nimbus", kVersion},
          {"gdal", gdal_runtime_version()},
          {"opencv", opencv_runtime_version()},
          {"onednn", onednn_runtime_version()}};
}

ImproveCloudMaskReport improve_cloud_mask(const ImproveCloudMaskOptions& options) {
  const auto start = Clock::now();
  ProgressEvents progress(options);
  // Everything that can be checked without reading pixels is checked first.
  validate(options.merge);
  validate_creation_options(options.creation_options);
  validate(options.chips);
  if (options.threads < 0 || options.threads > kMaxThreads) {
    throw ParameterError("threads", fmt::format("= {} is outside [0, {}]; use 0 for all cores", options.threads,
                                                kMaxThreads));
  }
  if (options.s2_raster.empty()) throw ParameterError("s2_raster", "is required; give a Sentinel-2 raster S2.tif");
  std::optional<AreaOfInterest> aoi;
  const std::string aoi_param = options.aoi.empty() ? "@[bbox]" : "@[aoi]";
  if (!options.aoi.empty() || !options.bbox.empty()) {
    aoi = AreaOfInterest::parse(options.aoi, options.bbox, options.aoi_crs);
  } else if (options.crop_to_aoi) {
    throw InputError("@[crop_to_aoi] needs an area of interest; pass @[aoi] or @[bbox]");
  }

  // Every output location is checked (and --keep-probabilities created) before any
  // work; the files are published together at the very end. Existing files are
  // refused unless @[overwrite]; the report and the preview may be streams ('-').
  OutputSet outputs(run_inputs(options), OutputRules{options.overwrite, false});
  AtomicOutput& mask_out = outputs.add_file(options.out, "output mask (@[out])");
  // GDAL keeps a GeoTIFF's category names in a sidecar; a name too long for one goes without.
  AtomicOutput* mask_categories_out =
      sidecar_fits(options.out, ".aux.xml")
          ? &outputs.add_file(options.out + ".aux.xml", "category names of the output mask (@[out])")
          : nullptr;
  AtomicOutput* cloud_prob_out = nullptr;
  AtomicOutput* shadow_prob_out = nullptr;
  if (!options.keep_probabilities_dir.empty()) {
    outputs.add_directory(options.keep_probabilities_dir, "@[keep_probabilities]");
    const std::filesystem::path dir(options.keep_probabilities_dir);
    cloud_prob_out = &outputs.add_file((dir / "cloud_probability.tif").string(),
                                       "@[keep_probabilities] (cloud_probability.tif)");
    shadow_prob_out = &outputs.add_file((dir / "shadow_probability.tif").string(),
                                        "@[keep_probabilities] (shadow_probability.tif)");
  }
  AtomicOutput* preview_out = options.preview_png.empty()
                                  ? nullptr
                                  : &outputs.add_file_or_stream(options.preview_png, "preview PNG (@[preview])");
  // A preview written to a file is georeferenced by two sidecars; a streamed one is the PNG alone.
  AtomicOutput* preview_world_out = nullptr;
  AtomicOutput* preview_aux_out = nullptr;
  if (preview_out && !preview_out->is_stream()) {
    const std::string world = world_file_path(options.preview_png);
    if (sidecar_fits(world, "")) preview_world_out = &outputs.add_file(world, "world file of @[preview]");
    if (sidecar_fits(options.preview_png, ".aux.xml")) {
      preview_aux_out = &outputs.add_file(options.preview_png + ".aux.xml", "CRS sidecar of @[preview]");
    }
  }
  AtomicOutput* report_out =
      options.report_path.empty() ? nullptr : &outputs.add_file_or_stream(options.report_path, "@[report]");
  AtomicOutput* stac_out =
      options.stac_out.empty() ? nullptr : &outputs.add_file(options.stac_out, "STAC Item (@[stac_out])");
  throw_if_cancelled(options.cancel);

  // A SAFE product or STAC item is stacked on the fly; its own cloud mask stands in for --product-mask.
  std::string scene_path = options.s2_raster;
  std::string product_path = options.product_mask;
  std::string product_role = "product mask (@[product_mask])";
  std::optional<Sentinel2Scene> safe;
  if (looks_like_sentinel2_scene(options.s2_raster)) {
    safe = open_sentinel2_scene(options.s2_raster);
    scene_path = safe->stack_path;
    if (product_path.empty()) {
      if (safe->product_mask_source == "none") {
        throw InputError(fmt::format("Sentinel-2 product '{}' has no MSK_CLASSI, cloud GML or SCL layer to derive the "
                                     "product mask from; pass @[product_mask] PM.tif",
                                     options.s2_raster));
      }
      product_path = safe->product_mask_path;
      product_role = fmt::format("product mask derived from {} of '{}'", safe->product_mask_source,
                                 options.s2_raster);
      logger()->info("product mask: {} of {}", safe->product_mask_source, options.s2_raster);
    }
  } else if (product_path.empty()) {
    throw InputError("no product mask given; pass @[product_mask] PM.tif (it is derived automatically only for "
                     "Sentinel-2 SAFE products and STAC items)");
  }

  const RasterReader scene(scene_path, safe ? fmt::format("Sentinel-2 product (@[s2_raster] '{}')", options.s2_raster)
                                      : std::string("Sentinel-2 raster (@[s2_raster])"));
  std::string boa_offset = "0";
  if (!scene.band_offsets().empty()) {
    boa_offset = fmt::format("{}", scene.band_offsets().front());
    logger()->info("processing baseline {}: adding BOA_ADD_OFFSET {} to every band so the models see pre-2022 DN",
                 safe ? safe->processing_baseline : std::string("04.00 or later"), boa_offset);
  }
  const RasterReader product(product_path, product_role);
  require_same_grid(scene, product);
  if (stac_out && (scene.grid().crs_wkt.empty() || !scene.grid().has_geotransform)) {
    throw InputError(fmt::format("{} '{}' has no CRS or geotransform, so a STAC Item (@[stac_out]) cannot say where "
                                 "the mask lies; georeference the input (gdal_edit.py -a_srs -a_ullr) or drop "
                                 "@[stac_out]",
                                 scene.role(), options.s2_raster));
  }
  const int ds = options.chips.downsampling;
  if (ds < 1 || ds > kMaxDownsampling) {
    throw InputError(fmt::format("downsampling is {}; use 1 (full resolution) to {}", ds, kMaxDownsampling));
  }
  if (ds > 1 && (scene.width() / ds < options.chips.window_size || scene.height() / ds < options.chips.window_size)) {
    throw InputError(fmt::format("{} '{}' is {}x{} pixels; decimated by downsampling {} it is {}x{}, smaller than the "
                                 "{}-pixel window; use a smaller downsampling or window",
                                 scene.role(), options.s2_raster, scene.width(), scene.height(), ds,
                                 scene.width() / ds, scene.height() / ds, options.chips.window_size));
  }
  // With an area of interest: the written window, and the window merged - grown by
  // the halo the merge needs so the written pixels equal the full scene's (see
  // docs/area_of_interest.md): closing_size for the dilation, min_area more so every
  // component smaller than min_area that touches the window lies wholly inside it.
  PixelWindow out_window{0, 0, scene.width(), scene.height()};
  PixelWindow merge_window = out_window;
  ChipPredictionParams chip_params = options.chips;
  if (aoi) {
    out_window = aoi->pixel_window(scene.grid(), fmt::format("{} '{}'", scene.role(), options.s2_raster));
    const long halo = static_cast<long>(options.merge.closing_size) + options.merge.min_area;
    merge_window = out_window.grown(static_cast<int>(std::min<long>(halo, std::max(scene.width(), scene.height()))),
                                    scene.width(), scene.height());
    chip_params.region = merge_window;
    logger()->info("area of interest: pixel window {} of {}x{}; merging {}", out_window.text(), scene.width(),
                   scene.height(), merge_window.text());
  }
  product.require_product_mask(merge_window);
  const ChipGrid grid(scene.width() / ds, scene.height() / ds, options.chips.window_size, options.chips.overlap);
  {
    // Per pixel of the merge window (the whole scene without an area of interest):
    // the mask and the product mask (bytes), the dilation (at most 4 bytes whatever
    // the radius), the kept probabilities; per pixel the chips read, the in-memory copy.
    const auto pixels = [](const PixelWindow& w) {
      return static_cast<std::uint64_t>(w.width) * static_cast<std::uint64_t>(w.height);
    };
    std::uint64_t per_pixel = 2 + 4;
    if (!options.keep_probabilities_dir.empty()) per_pixel += 8;
    std::uint64_t bytes = per_pixel * pixels(merge_window);
    if (options.chips.in_memory) {
      bytes += (static_cast<std::uint64_t>(scene.band_count()) * 4 + 1) *
               pixels(chip_read_extent(scene.width(), scene.height(), chip_params));
    }
    require_memory(bytes, fmt::format("{} '{}' ({}x{} pixels{}, {} bands)", scene.role(), options.s2_raster,
                                      scene.width(), scene.height(),
                                      aoi ? fmt::format(", area of interest {}", merge_window.text()) : "",
                                      scene.band_count()));
  }

  const ProbabilityHead& cloud_head = cloud_probability_head();
  const ProbabilityHead& shadow_head = shadow_probability_head();
  const BackendOptions engine{options.engine, options.threads};
  // The models come from the process's cache (loaded once, shared); the backends are this run's own.
  ModelLoadCounts model_loads;
  const auto backend = [&engine, &model_loads](const std::string& path, const EmbeddedModel& fallback,
                                               const ProbabilityHead& head) {
    return make_backend(load_model(path.empty() ? default_model_ref(fallback) : path, "", head.role, &model_loads),
                        head.role, engine);
  };
  auto cloud_model = backend(options.cloud_model, default_cloud_model(), cloud_head);
  auto shadow_model = backend(options.shadow_model, default_shadow_model(), shadow_head);
  check_model_fits_scene(*cloud_model, scene, cloud_head, options.chips);
  check_model_fits_scene(*shadow_model, scene, shadow_head, options.chips);

  throw_if_cancelled(options.cancel);

  ImproveCloudMaskReport report;
  report.seconds_prepare = progress.finished(RunProgress::Stage::Prepare);
  report.width = scene.width();
  report.height = scene.height();
  report.chips_total = grid.size();
  if (aoi) report.aoi_window = out_window.text();
  report.cloud_model = cloud_model->model().origin;
  report.cloud_model_sha256 = cloud_model->model().sha256;
  report.shadow_model = shadow_model->model().origin;
  report.shadow_model_sha256 = shadow_model->model().sha256;
  report.models_loaded = model_loads.loaded;
  report.model_cache_hits = model_loads.reused;

  // Without --keep-probabilities the floats are never stored: each model's
  // threshold is applied as chips arrive, keeping a full tile well under 2 GB.
  const bool keep = cloud_prob_out != nullptr;
  const bool want_preview = preview_out != nullptr;
  // Every buffer covers the merge window (the whole scene without an area of interest).
  FloatBuffer cloud, shadow;
  MaskBuffer mask(static_cast<std::size_t>(merge_window.width) * static_cast<std::size_t>(merge_window.height), 0);
  // Nodata apart from the mask (nodata passes every threshold): for the preview,
  // --nodata-value and the cloud cover, which counts valid pixels only.
  MaskBuffer nodata(mask.size(), 0);
  // The preview colours cloud and shadow apart: the shadow model's pixels kept aside.
  MaskBuffer shadow_above(want_preview ? mask.size() : 0, 0);
  const PredictionStats stats = predict_probabilities(
      scene,
      {ProbabilityTask{&cloud_head, cloud_model.get(), keep ? &cloud : nullptr, &mask,
                       options.merge.cloud_prob_threshold, &nodata},
       ProbabilityTask{&shadow_head, shadow_model.get(), keep ? &shadow : nullptr,
                       want_preview ? &shadow_above : &mask, options.merge.shadow_prob_threshold}},
      chip_params, progress.chips());
  progress.finished(RunProgress::Stage::Chips);
  report.chips_per_model = stats.chips;
  if (stats.chips_skipped == stats.chips) {
    throw InputError(fmt::format("{} '{}' has no valid pixel{}: in every pixel some band equals the nodata value; "
                                 "check the file's nodata value (gdalinfo) and that the scene covers data{}",
                                 scene.role(), options.s2_raster,
                                 aoi ? fmt::format(" near the area of interest ({})", aoi_param) : "",
                                 aoi ? fmt::format(" there, or move {}", aoi_param) : ""));
  }
  report.seconds_inference = stats.seconds_inference;
  report.seconds_chips = stats.seconds_total;
  report.chips_skipped = stats.chips_skipped;
  report.cloud_engine = cloud_model->engine();
  report.shadow_engine = shadow_model->engine();
  // The rewrites of the engine that ran each model (final once the chips have run).
  for (const auto* backend : {cloud_model.get(), shadow_model.get()}) {
    for (const auto& fix : backend->model_fixes()) {
      report.model_fixes.push_back(fmt::format("{}: {}", backend->model().origin, fix));
      logger()->info("model {}: {}", backend->model().origin, fix);
    }
  }

  const auto merge_start = Clock::now();
  // The mask's no-data pixels: FarmVibes writes them as 1 and tags 100 (a value that
  // never occurs); with --nodata-value they hold that value, which is also the tag.
  const std::uint8_t mask_nodata =
      options.nodata_value ? static_cast<std::uint8_t>(*options.nodata_value) : kFarmVibesMaskNodata;
  // Merged on the window the written pixels need (the grown AOI window, or the scene):
  // the buffers already cover just that window.
  const PixelWindow& merged_window = merge_window;
  MaskBuffer merged = std::move(mask);
  const MaskBuffer product_nonzero = aoi ? product.read_band_nonzero(1, merge_window) : product.read_band_nonzero(1);
  // For the preview: 1 where the cloud model or the product mask flagged a pixel, 2
  // where only the shadow model did.
  MaskBuffer flagged_by;
  if (want_preview) {
    const MaskBuffer shadow_flags = std::move(shadow_above);
    flagged_by.assign(merged.size(), 0);
    for (std::size_t i = 0; i < merged.size(); ++i) {
      flagged_by[i] = merged[i] || product_nonzero[i] ? 1 : shadow_flags[i] ? 2 : 0;
      merged[i] |= shadow_flags[i];
    }
  }
  finish_merge(merged, product_nonzero, merged_window.width, merged_window.height, options.merge);
  MaskBuffer classes;
  if (want_preview) {
    // A masked pixel is shadow when within the dilation of a shadow-only pixel and
    // not itself flagged as cloud; otherwise cloud (the product mask counts as cloud).
    MaskBuffer near_shadow(merged.size());
    for (std::size_t i = 0; i < merged.size(); ++i) near_shadow[i] = flagged_by[i] == 2 ? 1 : 0;
    dilate_with_disk(near_shadow, merged_window.width, merged_window.height, options.merge.closing_size);
    classes.resize(merged.size());
    for (std::size_t i = 0; i < merged.size(); ++i) {
      classes[i] = !merged[i] ? kPreviewClear : near_shadow[i] && flagged_by[i] != 1 ? kPreviewShadow : kPreviewCloud;
    }
  }
  if (aoi) {
    // Keep the written window.
    const PixelWindow inner{out_window.x0 - merge_window.x0, out_window.y0 - merge_window.y0, out_window.width,
                            out_window.height};
    mask = crop(merged, merge_window.width, inner);
    if (!classes.empty()) classes = crop(classes, merge_window.width, inner);
    nodata = crop(nodata, merge_window.width, inner);
    if (keep) {
      cloud = crop(cloud, merge_window.width, inner);
      shadow = crop(shadow, merge_window.width, inner);
    }
    if (options.crop_to_aoi) {
      const MaskBuffer inside = aoi->inside_mask(scene.grid(), out_window);
      for (std::size_t i = 0; i < inside.size(); ++i) {
        if (inside[i]) continue;
        mask[i] = mask_nodata;
        if (!classes.empty()) classes[i] = kPreviewNodata;
        if (keep) cloud[i] = shadow[i] = kProbabilityNodata;
      }
    }
  } else {
    mask = std::move(merged);
  }
  for (std::size_t i = 0; i < nodata.size(); ++i) {
    if (!nodata[i]) continue;
    if (options.nodata_value) mask[i] = mask_nodata;
    if (!classes.empty()) classes[i] = kPreviewNodata;
  }
  report.seconds_merge = seconds_since(merge_start);
  progress.finished(RunProgress::Stage::Merge);
  const GridInfo out_grid = window_grid(scene.grid(), out_window);
  throw_if_cancelled(options.cancel);
  const auto write_start = Clock::now();

  // Provenance: what produced this mask, so it can be reproduced and audited.
  const bool derived_mask = safe && options.product_mask.empty();
  std::map<std::string, std::string> provenance{
      {"NIMBUS_VERSION", kVersion},
      {"NIMBUS_S2_RASTER", std::filesystem::path(options.s2_raster).filename().string()},
      {"NIMBUS_PRODUCT_MASK", derived_mask ? safe->product_mask_source
                                           : std::filesystem::path(options.product_mask).filename().string()},
      {"NIMBUS_CLOUD_MODEL", std::filesystem::path(report.cloud_model).filename().string()},
      {"NIMBUS_CLOUD_MODEL_SHA256", report.cloud_model_sha256},
      {"NIMBUS_SHADOW_MODEL", std::filesystem::path(report.shadow_model).filename().string()},
      {"NIMBUS_SHADOW_MODEL_SHA256", report.shadow_model_sha256},
      {"NIMBUS_CLOUD_ENGINE", report.cloud_engine},
      {"NIMBUS_SHADOW_ENGINE", report.shadow_engine},
      {"NIMBUS_BOA_ADD_OFFSET_APPLIED", boa_offset},
  };
  provenance.merge(parameter_tags(options));
  if (aoi) {
    provenance["NIMBUS_AOI_WINDOW"] = out_window.text();
    provenance["NIMBUS_AOI_CRS"] = options.aoi_crs;
    provenance["NIMBUS_CROP_TO_AOI"] = options.crop_to_aoi ? "true" : "false";
  }
  if (safe) {
    provenance["NIMBUS_PROCESSING_BASELINE"] = safe->processing_baseline;
    provenance["NIMBUS_PRODUCT_MASK_SOURCE"] = derived_mask ? safe->product_mask_source : "given";
  }
  GeoTiffOptions mask_options = mask_geotiff_options();
  mask_options.nodata = mask_nodata;
  describe_mask_band(mask_options, mask_nodata, !options.nodata_value.has_value());
  mask_options.metadata = provenance;
  mask_options.creation_options = options.creation_options;
  mask_options.cancel = options.cancel;
  mask_out.write_with([&](const std::string& path) {
    write_single_band_geotiff(path, "output mask (@[out])", out_grid, mask.data(), mask_options);
  });
  if (mask_categories_out) mask_categories_out->write_bytes(mask_category_names_aux_xml(mask_nodata));

  if (cloud_prob_out) {
    GeoTiffOptions prob_options = probability_geotiff_options();
    prob_options.metadata = provenance;
    prob_options.creation_options = options.creation_options;
    prob_options.cancel = options.cancel;
    prob_options.unit = "1";  // a probability: dimensionless, 0..1
    prob_options.band_description = fmt::format("cloud probability (0..1; {} no data)", kProbabilityNodata);
    cloud_prob_out->write_with([&](const std::string& path) {
      write_single_band_geotiff(path, "@[keep_probabilities]", out_grid, cloud.data(), prob_options);
    });
    prob_options.band_description = fmt::format("shadow probability (0..1; {} no data)", kProbabilityNodata);
    shadow_prob_out->write_with([&](const std::string& path) {
      write_single_band_geotiff(path, "@[keep_probabilities]", out_grid, shadow.data(), prob_options);
    });
  }
  if (preview_out) {
    const Preview preview = render_mask_preview(scene, out_window, classes);
    preview_out->write_bytes(preview.png);
    if (preview_world_out) preview_world_out->write_bytes(world_file_text(preview.grid));
    if (preview_aux_out) preview_aux_out->write_bytes(preview_aux_xml(preview.grid));
  }
  throw_if_cancelled(options.cancel);
  report.seconds_write = seconds_since(write_start);

  std::size_t masked = 0, counted = 0;
  for (std::uint8_t v : mask) {
    masked += v == kMaskCloudOrShadow ? 1 : 0;
    counted += v == mask_nodata ? 0 : 1;
  }
  report.masked_fraction = counted == 0 ? 0.0 : static_cast<double>(masked) / static_cast<double>(counted);
  {
    // Cloud cover as catalogues give it: percent of the valid pixels inside the area of
    // interest's polygon (with crop_to_aoi the pixels outside are nodata already).
    const MaskBuffer inside =
        aoi && !options.crop_to_aoi ? aoi->inside_mask(scene.grid(), out_window) : MaskBuffer();
    std::size_t cover_masked = 0, cover_valid = 0;
    for (std::size_t i = 0; i < mask.size(); ++i) {
      if (mask[i] == mask_nodata || nodata[i] || (!inside.empty() && !inside[i])) continue;
      ++cover_valid;
      cover_masked += mask[i] == 1 ? 1 : 0;
    }
    if (cover_valid > 0) {
      report.cloud_cover = 100.0 * static_cast<double>(cover_masked) / static_cast<double>(cover_valid);
    }
  }
  report.seconds_total = seconds_since(start);
  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);
  report.peak_rss_mb = static_cast<double>(usage.ru_maxrss) / 1024.0;
  report.nimbus_version = kVersion;
  report.versions = component_versions();
  {
    const Json values = improve_cloud_mask_values(options);
    for (const ParamSpec& p : improve_cloud_mask_operation().parameters) {
      const Json& value = values.at(p.name);
      if (p.role == ParamRole::Setting) {
        report.parameters[p.name] = value;
      } else if (p.role == ParamRole::Input) {
        report.inputs[p.name] = value;
      }
    }
    report.inputs["cloud_model"] = report.cloud_model;  // its origin: the path, or embedded:<name>
    report.inputs["shadow_model"] = report.shadow_model;
    if (derived_mask) report.inputs["product_mask"] = "derived from " + safe->product_mask_source;
    report.outputs["mask"] = options.out;
    if (keep) {
      const std::filesystem::path dir(options.keep_probabilities_dir);
      report.outputs["cloud_probability"] = (dir / "cloud_probability.tif").string();
      report.outputs["shadow_probability"] = (dir / "shadow_probability.tif").string();
    }
    if (preview_out) report.outputs["preview"] = options.preview_png;
    if (report_out) report.outputs["report"] = options.report_path;
    if (stac_out) report.outputs["stac_item"] = options.stac_out;
  }
  if (stac_out) {
    MaskItemFacts facts;
    facts.item_path = options.stac_out;
    facts.mask_path = options.out;
    facts.mask_sha256 = sha256_file(mask_out.temp_path(), "output mask (@[out])");
    std::error_code ec;
    facts.mask_bytes = std::filesystem::file_size(mask_out.temp_path(), ec);
    facts.grid = out_grid;
    facts.aoi = aoi ? &*aoi : nullptr;
    if (safe) {
      facts.datetime = safe->datetime;
      facts.start_datetime = safe->start_datetime;
      facts.end_datetime = safe->end_datetime;
      facts.input_stac_item = safe->stac_item;
    } else {
      // A stack may carry its acquisition time (e.g. from the SAFE product it was made of).
      for (const char* key : {"datetime", "ACQUISITION_DATETIME", "PRODUCT_START_TIME", "SENSING_TIME"}) {
        facts.datetime = scene.metadata_item(key);
        if (!facts.datetime.empty()) break;
      }
    }
    const Json item = mask_stac_item(options, report, facts);
    try {
      write_whole_file(stac_out->temp_path(), "@[stac_out]",
                       item.dump(2, ' ', false, Json::error_handler_t::replace) + "\n");
    } catch (const InputError&) {
      throw InputError(fmt::format("@[stac_out] '{}' could not be written; check disk space and permissions",
                                   options.stac_out));
    }
  }
  if (report_out) {
    // Paths are bytes: a Latin-1 file name must not make the report (and the run) fail.
    report_out->write_bytes(report_json(report).dump(2, ' ', false, Json::error_handler_t::replace) + "\n");
  }

  // Every file is complete; publish them together (or none of them).
  outputs.commit();
  progress.finished(RunProgress::Stage::Write);
  return report;
}

Json report_json(const ImproveCloudMaskReport& r) {
  return {{"nimbus_version", r.nimbus_version},
          {"versions", r.versions},
          {"inputs", r.inputs},
          {"outputs", r.outputs},
          {"parameters", r.parameters},
          {"engine", r.parameters.value("engine", Json())},
          {"width", r.width},
          {"height", r.height},
          {"chips_per_model", r.chips_per_model},
          {"chips_total", r.chips_total},
          {"aoi_window", r.aoi_window.empty() ? Json() : Json(r.aoi_window)},
          {"chips_skipped", r.chips_skipped},
          {"cloud_model", r.cloud_model},
          {"cloud_model_sha256", r.cloud_model_sha256},
          {"shadow_model", r.shadow_model},
          {"shadow_model_sha256", r.shadow_model_sha256},
          {"cloud_engine", r.cloud_engine},
          {"shadow_engine", r.shadow_engine},
          {"model_fixes", r.model_fixes},
          {"models_loaded", r.models_loaded},
          {"model_cache_hits", r.model_cache_hits},
          {"masked_fraction", r.masked_fraction},
          {"cloud_cover", r.cloud_cover ? Json(*r.cloud_cover) : Json()},
          {"seconds_prepare", r.seconds_prepare},
          {"seconds_inference", r.seconds_inference},
          {"seconds_chips", r.seconds_chips},
          {"seconds_merge", r.seconds_merge},
          {"seconds_write", r.seconds_write},
          {"seconds_total", r.seconds_total},
          {"peak_rss_mb", r.peak_rss_mb}};
}

}  // namespace nimbus
