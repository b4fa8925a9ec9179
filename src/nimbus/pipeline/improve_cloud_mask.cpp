#include "nimbus/pipeline/improve_cloud_mask.h"

#include <sys/resource.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <algorithm>
#include <optional>

#include <opencv2/core.hpp>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "nimbus/core/error.h"
#include "nimbus/core/input_files.h"
#include "nimbus/core/version.h"
#include "nimbus/inference/backend.h"
#include "nimbus/models/default_models.h"
#include "nimbus/ops/compute_cloud_prob.h"
#include "nimbus/ops/compute_shadow_prob.h"
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

ChipProgress log_progress(const char* what) {
  return [what](int done, int total) {
    if (done == total || done % 16 == 0) spdlog::info("{}: {}/{} chips", what, done, total);
  };
}

}  // namespace

ImproveCloudMaskReport improve_cloud_mask(const ImproveCloudMaskOptions& options) {
  const auto start = Clock::now();
  // Everything that can be checked without reading pixels is checked first.
  validate(options.merge);
  validate_creation_options(options.creation_options);
  validate(options.chips);
  if (options.threads < 0 || options.threads > kMaxThreads) {
    throw InputError(fmt::format("threads (--threads) = {} is outside [0, {}]; use 0 for all cores", options.threads,
                                 kMaxThreads));
  }
  if (options.s2_raster.empty()) throw InputError("no Sentinel-2 raster given; pass --s2-raster S2.tif");

  // A SAFE product is stacked on the fly; its own cloud mask stands in for --product-mask.
  std::string scene_path = options.s2_raster;
  std::string product_path = options.product_mask;
  std::string product_role = "product mask (--product-mask)";
  std::optional<SafeScene> safe;
  if (looks_like_sentinel2_safe(options.s2_raster)) {
    safe = open_sentinel2_safe(options.s2_raster);
    scene_path = safe->stack_path;
    if (product_path.empty()) {
      if (safe->product_mask_source == "none") {
        throw InputError(fmt::format("Sentinel-2 product '{}' has no MSK_CLASSI, cloud GML or SCL layer to derive the "
                                     "product mask from; pass --product-mask PM.tif",
                                     options.s2_raster));
      }
      product_path = safe->product_mask_path;
      product_role = fmt::format("product mask derived from {} of '{}'", safe->product_mask_source,
                                 options.s2_raster);
      spdlog::info("product mask: {} of {}", safe->product_mask_source, options.s2_raster);
    }
  } else if (product_path.empty()) {
    throw InputError("no product mask given; pass --product-mask PM.tif (it is derived automatically only for "
                     "Sentinel-2 SAFE products)");
  }

  const RasterReader scene(scene_path, safe ? fmt::format("Sentinel-2 product (--s2-raster '{}')", options.s2_raster)
                                      : std::string("Sentinel-2 raster (--s2-raster)"));
  std::string boa_offset = "0";
  if (!scene.band_offsets().empty()) {
    boa_offset = fmt::format("{}", scene.band_offsets().front());
    spdlog::info("processing baseline {}: adding BOA_ADD_OFFSET {} to every band so the models see pre-2022 DN",
                 safe ? safe->processing_baseline : std::string("04.00 or later"), boa_offset);
  }
  const RasterReader product(product_path, product_role);
  require_same_grid(scene, product);
  product.require_product_mask();
  const ChipGrid grid(scene.width(), scene.height(), options.chips.window_size, options.chips.overlap);
  {
    // Per pixel: the mask and the product mask (bytes), the dilation (at most 4 bytes
    // whatever the radius), the kept probabilities, the in-memory copy of the scene.
    const std::uint64_t npix = static_cast<std::uint64_t>(scene.width()) * static_cast<std::uint64_t>(scene.height());
    std::uint64_t per_pixel = 2 + 4;
    if (!options.keep_probabilities_dir.empty()) per_pixel += 8;
    if (options.chips.in_memory) per_pixel += static_cast<std::uint64_t>(scene.band_count()) * 4 + 1;
    require_memory(per_pixel * npix, fmt::format("{} '{}' ({}x{} pixels, {} bands)", scene.role(), options.s2_raster,
                                                 scene.width(), scene.height(), scene.band_count()));
  }

  const ProbabilityHead& cloud_head = cloud_probability_head();
  const ProbabilityHead& shadow_head = shadow_probability_head();
  const auto backend = [](const std::string& path, const EmbeddedModel& fallback, const ProbabilityHead& head) {
    return make_backend(load_model(path.empty() ? default_model_ref(fallback) : path, "", head.role), head.role);
  };
  auto cloud_model = backend(options.cloud_model, default_cloud_model(), cloud_head);
  auto shadow_model = backend(options.shadow_model, default_shadow_model(), shadow_head);
  check_model_fits_scene(*cloud_model, scene, cloud_head, options.chips);
  check_model_fits_scene(*shadow_model, scene, shadow_head, options.chips);

  {
    // No output may replace an input (e.g. --out product_mask.tif).
    const std::vector<std::pair<std::string, std::string>> inputs{
        {options.s2_raster, "Sentinel-2 raster (--s2-raster)"},
        {product_path, "product mask (--product-mask)"},
        {options.cloud_model, "cloud model (--cloud-model)"},
        {options.shadow_model, "shadow model (--shadow-model)"}};
    require_not_an_input(options.out, "output mask (--out)", inputs);
    require_not_an_input(options.preview_png, "preview (--preview)", inputs);
    if (!options.keep_probabilities_dir.empty()) {
      for (const char* name : {"cloud_probability.tif", "shadow_probability.tif"}) {
        require_not_an_input((std::filesystem::path(options.keep_probabilities_dir) / name).string(),
                             "--keep-probabilities output", inputs);
      }
    }
  }
  AtomicOutput mask_out(options.out, "output mask (--out)");
  std::optional<AtomicOutput> cloud_prob_out, shadow_prob_out;
  if (!options.keep_probabilities_dir.empty()) {
    ensure_directory(options.keep_probabilities_dir, "--keep-probabilities");
    const std::filesystem::path dir(options.keep_probabilities_dir);
    cloud_prob_out.emplace((dir / "cloud_probability.tif").string(), "--keep-probabilities");
    shadow_prob_out.emplace((dir / "shadow_probability.tif").string(), "--keep-probabilities");
  }

  if (options.threads > 0) cv::setNumThreads(options.threads);

  ImproveCloudMaskReport report;
  report.width = scene.width();
  report.height = scene.height();
  report.chips_per_model = grid.size();
  report.cloud_model = cloud_model->model().origin;
  report.cloud_model_sha256 = cloud_model->model().sha256;
  report.shadow_model = shadow_model->model().origin;
  report.shadow_model_sha256 = shadow_model->model().sha256;
  for (const auto* backend : {cloud_model.get(), shadow_model.get()}) {
    for (const auto& fix : backend->model().fixes_applied) {
      report.model_fixes.push_back(fmt::format("{}: {}", backend->model().origin, fix));
      spdlog::info("model {}: {}", backend->model().origin, fix);
    }
  }

  // Without --keep-probabilities the floats are never stored: each model's
  // threshold is applied as chips arrive, keeping a full tile well under 2 GB.
  const bool keep = cloud_prob_out.has_value();
  FloatBuffer cloud, shadow;
  MaskBuffer mask(static_cast<std::size_t>(scene.width()) * static_cast<std::size_t>(scene.height()), 0);
  const PredictionStats stats = predict_probabilities(
      scene,
      {ProbabilityTask{&cloud_head, cloud_model.get(), keep ? &cloud : nullptr, &mask,
                       options.merge.cloud_prob_threshold},
       ProbabilityTask{&shadow_head, shadow_model.get(), keep ? &shadow : nullptr, &mask,
                       options.merge.shadow_prob_threshold}},
      options.chips, log_progress("cloud+shadow"));
  if (stats.chips_skipped == stats.chips) {
    throw InputError(fmt::format("{} '{}' has no valid pixel: in every pixel some band equals the nodata value; "
                                 "check the file's nodata value (gdalinfo) and that the scene covers data",
                                 scene.role(), options.s2_raster));
  }
  report.seconds_inference = stats.seconds_inference;
  report.seconds_chips = stats.seconds_total;
  report.chips_skipped = stats.chips_skipped;

  const auto merge_start = Clock::now();
  finish_merge(mask, product.read_band_nonzero(1), scene.width(), scene.height(), options.merge);
  report.seconds_merge = seconds_since(merge_start);
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
      {"NIMBUS_CLOUD_THRESHOLD", fmt::format("{}", options.merge.cloud_prob_threshold)},
      {"NIMBUS_SHADOW_THRESHOLD", fmt::format("{}", options.merge.shadow_prob_threshold)},
      {"NIMBUS_CLOSING_SIZE", std::to_string(options.merge.closing_size)},
      {"NIMBUS_MIN_AREA", std::to_string(options.merge.min_area)},
      {"NIMBUS_WINDOW", std::to_string(options.chips.window_size)},
      {"NIMBUS_OVERLAP", fmt::format("{}", options.chips.overlap)},
      {"NIMBUS_BLEND", options.chips.blend == ChipBlend::Linear ? "linear" : "midpoint"},
      {"NIMBUS_BOA_ADD_OFFSET_APPLIED", boa_offset},
  };
  if (safe) {
    provenance["NIMBUS_PROCESSING_BASELINE"] = safe->processing_baseline;
    provenance["NIMBUS_PRODUCT_MASK_SOURCE"] = derived_mask ? safe->product_mask_source : "given";
  }
  GeoTiffOptions mask_options = mask_geotiff_options();
  mask_options.metadata = provenance;
  mask_options.creation_options = options.creation_options;
  write_single_band_geotiff(mask_out.temp_path(), "output mask (--out)", scene.grid(), mask.data(), mask_options);

  if (cloud_prob_out) {
    GeoTiffOptions prob_options = probability_geotiff_options();
    prob_options.metadata = provenance;
    prob_options.creation_options = options.creation_options;
    write_single_band_geotiff(cloud_prob_out->temp_path(), "--keep-probabilities", scene.grid(), cloud.data(),
                              prob_options);
    write_single_band_geotiff(shadow_prob_out->temp_path(), "--keep-probabilities", scene.grid(), shadow.data(),
                              prob_options);
  }
  if (!options.preview_png.empty()) write_mask_preview(scene, mask, options.preview_png);

  // Every file is complete; publish them together.
  if (cloud_prob_out) {
    cloud_prob_out->commit();
    shadow_prob_out->commit();
  }
  mask_out.commit();
  report.seconds_write = seconds_since(write_start);

  std::size_t masked = 0;
  for (std::uint8_t v : mask) masked += v;
  report.masked_fraction = mask.empty() ? 0.0 : static_cast<double>(masked) / static_cast<double>(mask.size());
  report.seconds_total = seconds_since(start);
  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);
  report.peak_rss_mb = static_cast<double>(usage.ru_maxrss) / 1024.0;
  return report;
}

Json report_json(const ImproveCloudMaskReport& r) {
  return {{"width", r.width},
          {"height", r.height},
          {"chips_per_model", r.chips_per_model},
          {"chips_skipped", r.chips_skipped},
          {"cloud_model", r.cloud_model},
          {"cloud_model_sha256", r.cloud_model_sha256},
          {"shadow_model", r.shadow_model},
          {"shadow_model_sha256", r.shadow_model_sha256},
          {"masked_fraction", r.masked_fraction},
          {"seconds_inference", r.seconds_inference},
          {"seconds_chips", r.seconds_chips},
          {"seconds_merge", r.seconds_merge},
          {"seconds_write", r.seconds_write},
          {"seconds_total", r.seconds_total},
          {"peak_rss_mb", r.peak_rss_mb}};
}

}  // namespace nimbus
