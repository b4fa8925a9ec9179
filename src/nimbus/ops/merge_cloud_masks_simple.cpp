#include "nimbus/ops/merge_cloud_masks_simple.h"

#include <algorithm>
#include <cmath>
#include <limits>

#if defined(__SSE2__)
#include <xmmintrin.h>
#endif

#include <opencv2/core/utility.hpp>

#include <fmt/format.h>

#include "nimbus/core/error.h"
#include "nimbus/ops/morphology.h"
#include "nimbus/ops/packed_mask.h"

namespace nimbus {
namespace {

// Bits of 64 pixels: c > cloud_thr || s > shadow_thr (false for NaN, as in numpy).
std::uint64_t threshold64(const float* c, const float* s, float cloud_thr, float shadow_thr) {
#if defined(__SSE2__)
  const __m128 ct = _mm_set1_ps(cloud_thr), st = _mm_set1_ps(shadow_thr);
  std::uint64_t bits = 0;
  for (int i = 0; i < 64; i += 4) {
    const __m128 above = _mm_or_ps(_mm_cmpgt_ps(_mm_loadu_ps(c + i), ct), _mm_cmpgt_ps(_mm_loadu_ps(s + i), st));
    bits |= static_cast<std::uint64_t>(_mm_movemask_ps(above)) << i;
  }
  return bits;
#else
  std::uint64_t bits = 0;
  for (int i = 0; i < 64; ++i) bits |= static_cast<std::uint64_t>(c[i] > cloud_thr || s[i] > shadow_thr) << i;
  return bits;
#endif
}

}  // namespace

void validate(const MergeParams& p) {
  const auto check_threshold = [](double v, const char* name, const char* flag) {
    if (!(v >= 0.0 && v <= 1.0)) {
      throw InputError(fmt::format("parameter {} = {} is outside [0, 1]; pass a probability, e.g. {} 0.3", name, v,
                                   flag));
    }
  };
  check_threshold(p.cloud_prob_threshold, "cloud_prob_threshold", "@[cloud_thr]");
  check_threshold(p.shadow_prob_threshold, "shadow_prob_threshold", "@[shadow_thr]");
  if (p.closing_size < 0) {
    throw InputError(fmt::format("parameter closing_size = {} is negative; use 0 (no dilation) or more, default 5",
                                 p.closing_size));
  }
  if (p.closing_size > kMaxClosingSize) {
    throw InputError(fmt::format("parameter closing_size = {} is larger than the maximum {} pixels (a disk wider than "
                                 "a Sentinel-2 tile's diagonal would mask the whole tile from one cloudy pixel); use "
                                 "a radius of at most {}, default 5",
                                 p.closing_size, kMaxClosingSize, kMaxClosingSize));
  }
  if (p.min_area < 0) {
    throw InputError(fmt::format("parameter min_area = {} is negative; use 0 (keep everything) or more", p.min_area));
  }
}

MaskBuffer merge_cloud_masks_simple(const FloatBuffer& cloud_probability,
                                                   const FloatBuffer& shadow_probability,
                                                   const MaskBuffer& product_nonzero, int width,
                                                   int height, const MergeParams& params) {
  validate(params);
  const std::size_t n = static_cast<std::size_t>(width) * static_cast<std::size_t>(height);
  if (cloud_probability.size() != n || shadow_probability.size() != n || product_nonzero.size() != n) {
    throw InternalError("merge_cloud_masks_simple: input sizes differ from the grid");
  }
  // numpy compares a float32 array with a Python float in float32.
  const float cloud_thr = static_cast<float>(params.cloud_prob_threshold);
  const float shadow_thr = static_cast<float>(params.shadow_prob_threshold);
  // Threshold both models and OR the product mask straight into bits, rows in
  // parallel: the pass is bound by reading the two float tiles, so nothing else is
  // written at full size until the dilated mask is unpacked.
  PackedMask bits(width, height);
  const std::size_t full_words = static_cast<std::size_t>(width) / 64;
  cv::parallel_for_(cv::Range(0, height), [&](const cv::Range& rows) {
    for (int y = rows.start; y < rows.end; ++y) {
      const std::size_t offset = static_cast<std::size_t>(y) * width;
      const float* cp = cloud_probability.data() + offset;
      const float* sp = shadow_probability.data() + offset;
      const std::uint8_t* pp = product_nonzero.data() + offset;
      std::uint64_t* out = bits.row(y);
      for (std::size_t k = 0; k < full_words; ++k) {
        out[k] = threshold64(cp + 64 * k, sp + 64 * k, cloud_thr, shadow_thr) | pack_bytes64(pp + 64 * k);
      }
      if (full_words < bits.words_per_row()) {
        std::uint64_t word = 0;
        for (int x = static_cast<int>(64 * full_words); x < width; ++x) {
          const bool set = cp[x] > cloud_thr || sp[x] > shadow_thr || pp[x] != 0;
          word |= static_cast<std::uint64_t>(set) << (x % 64);
        }
        out[full_words] = word;
      }
    }
  });
  MaskBuffer mask(n);
  unpack_mask(dilate_packed(bits, params.closing_size), mask.data());
  remove_small_components(mask, width, height, params.min_area);
  return mask;
}

void finish_merge(MaskBuffer& mask, const MaskBuffer& product_nonzero, int width,
                  int height, const MergeParams& params) {
  validate(params);
  if (mask.size() != product_nonzero.size()) throw InternalError("finish_merge: input sizes differ");
  std::uint8_t* m = mask.data();
  const std::uint8_t* pp = product_nonzero.data();
  cv::parallel_for_(cv::Range(0, height), [&](const cv::Range& rows) {
    const std::size_t end = static_cast<std::size_t>(rows.end) * width;
    for (std::size_t i = static_cast<std::size_t>(rows.start) * width; i < end; ++i) m[i] |= pp[i];
  });
  dilate_with_disk(mask, width, height, params.closing_size);
  remove_small_components(mask, width, height, params.min_area);
}

}  // namespace nimbus

#include "nimbus/core/input_files.h"
#include "nimbus/ops/registry.h"
#include "nimbus/raster/area_of_interest.h"
#include "nimbus/raster/geotiff_writer.h"
#include "nimbus/raster/raster_reader.h"

namespace nimbus {

namespace {

// With a run geometry: merge on the output window grown by the halo, keep the window.
// Each input covers some window of the run's grid (its artifact's, or all of it); the
// merge reads from each the pixels of the grown window.
OpOutputs run_on_window(const OpRunContext& ctx, const MergeParams& params, const RasterReader& cloud,
                        const RasterReader& shadow, const RasterReader& product) {
  const RunWindow& run = *ctx.window;
  const long halo = static_cast<long>(params.closing_size) + params.min_area;
  const PixelWindow merge =
      run.pixels.grown(static_cast<int>(std::min<long>(halo, std::max(run.grid_width, run.grid_height))),
                       run.grid_width, run.grid_height);
  // The pixels of `merge` inside the file of `port`, which covers its artifact's window.
  const auto local = [&](const char* port, const RasterReader& r) {
    const Artifact& a = ctx.inputs.at(port);
    const PixelWindow covers = a.window.value_or(PixelWindow{0, 0, run.grid_width, run.grid_height});
    if (covers.width != r.width() || covers.height != r.height() || merge.x0 < covers.x0 ||
        merge.y0 < covers.y0 || merge.x1() > covers.x1() || merge.y1() > covers.y1()) {
      throw InputError(fmt::format("input {} of task '{}' ({}x{} pixels, covering {}) does not hold the pixels {} "
                                   "the run geometry needs; feed it from the scene or from an op of this run",
                                   port, ctx.task, r.width(), r.height(), covers.text(), merge.text()));
    }
    return PixelWindow{merge.x0 - covers.x0, merge.y0 - covers.y0, merge.width, merge.height};
  };
  const std::size_t n = static_cast<std::size_t>(merge.width) * static_cast<std::size_t>(merge.height);
  require_memory(n * (4 + 4 + 1 + 1 + 4), fmt::format("{} '{}' (window {})", cloud.role(), cloud.path(),
                                                      merge.text()));
  FloatBuffer cloud_p(n), shadow_p(n);
  const PixelWindow in_cloud = local("cloud_probability", cloud), in_shadow = local("shadow_probability", shadow);
  cloud.read_band_window(1, in_cloud.x0, in_cloud.y0, in_cloud.width, in_cloud.height, cloud_p.data());
  shadow.read_band_window(1, in_shadow.x0, in_shadow.y0, in_shadow.width, in_shadow.height, shadow_p.data());
  const PixelWindow in_product = local("product_mask", product);
  product.require_product_mask(in_product);
  const MaskBuffer merged = merge_cloud_masks_simple(cloud_p, shadow_p, product.read_band_nonzero(1, in_product),
                                                     merge.width, merge.height, params);
  const PixelWindow inner{run.pixels.x0 - merge.x0, run.pixels.y0 - merge.y0, run.pixels.width, run.pixels.height};
  const MaskBuffer mask = crop(merged, merge.width, inner);
  const std::string path = ctx.output_dir + "/merged_cloud_mask.tif";
  write_single_band_geotiff(path, fmt::format("output of task '{}'", ctx.task),
                            window_grid(cloud.grid(), PixelWindow{in_cloud.x0 + inner.x0, in_cloud.y0 + inner.y0,
                                                                  inner.width, inner.height}),
                            mask.data(), mask_geotiff_options());
  return OpOutputs{{"merged_cloud_mask", Artifact{path, "Sentinel2CloudMask", ""}}};
}

}  // namespace

OpDefinition merge_cloud_masks_simple_definition() {
  OpDefinition op;
  op.name = "merge_cloud_masks_simple";
  op.op_dir = "merge_cloud_masks";
  op.short_description = "Merges cloud, shadow and product cloud masks.";
  op.inputs = {{"product_mask", "Sentinel2CloudMask", "The product's cloud mask; non-zero = cloud"},
               {"cloud_probability", "Sentinel2CloudProbability", "Cloud probability raster"},
               {"shadow_probability", "Sentinel2CloudProbability", "Shadow probability raster"}};
  op.outputs = {{"merged_cloud_mask", "Sentinel2CloudMask", "Merged mask, uint8 0/1, nodata tag 100"}};
  op.parameters = {
      ParamSpec{"cloud_prob_threshold", ParamType::Float, 0.3,
                "Minimum probability to label a pixel as cloud (strict >)", 0.0, 1.0}
          .affecting_output()
          .tagged("NIMBUS_CLOUD_THRESHOLD"),
      ParamSpec{"shadow_prob_threshold", ParamType::Float, 0.2,
                "Minimum probability to label a pixel as shadow (strict >)", 0.0, 1.0}
          .affecting_output()
          .tagged("NIMBUS_SHADOW_THRESHOLD"),
      ParamSpec{"closing_size", ParamType::Int, 5, "Radius of the disk the merged mask is dilated with", 0.0,
                static_cast<double>(kMaxClosingSize)}
          .affecting_output()
          .tagged("NIMBUS_CLOSING_SIZE"),
      ParamSpec{"min_area", ParamType::Int, 0,
                "Drop cloud specks and fill clear holes smaller than this many pixels (0 = off)", 0.0}
          .affecting_output()
          .tagged("NIMBUS_MIN_AREA"),
  };
  op.same_grid_inputs = {"cloud_probability", "shadow_probability", "product_mask"};
  op.output_grid_of = {{"merged_cloud_mask", "cloud_probability"}};
  op.input_checks["product_mask"] = [](const std::string& path, const std::string& role) {
    RasterReader(path, role).require_product_mask();
  };
  // The halo that keeps an area of interest exact (docs/area_of_interest.md): the
  // dilation radius, and min_area more for the components that touch the window.
  op.area_halo = [](const Json& p) {
    return static_cast<int>(std::min<long>(p.at("closing_size").get<long>() + p.at("min_area").get<long>(),
                                           std::numeric_limits<int>::max()));
  };
  op.run = [](const OpRunContext& ctx) {
    const Json& p = ctx.parameters;
    MergeParams params;
    params.cloud_prob_threshold = p.at("cloud_prob_threshold").get<double>();
    params.shadow_prob_threshold = p.at("shadow_prob_threshold").get<double>();
    params.closing_size = static_cast<int>(p.at("closing_size").get<long>());
    params.min_area = static_cast<int>(p.at("min_area").get<long>());
    validate(params);
    const auto role = [&](const char* port) { return fmt::format("input {} of task '{}'", port, ctx.task); };
    const RasterReader cloud(ctx.inputs.at("cloud_probability").path, role("cloud_probability"));
    const RasterReader shadow(ctx.inputs.at("shadow_probability").path, role("shadow_probability"));
    const RasterReader product(ctx.inputs.at("product_mask").path, role("product_mask"));
    if (ctx.window) return run_on_window(ctx, params, cloud, shadow, product);
    require_same_grid(cloud, shadow);
    require_same_grid(cloud, product);
    product.require_product_mask();
    require_memory(static_cast<std::uint64_t>(cloud.width()) * static_cast<std::uint64_t>(cloud.height()) * (4 + 4 + 1 + 1 + 4),
                   fmt::format("{} '{}' ({}x{} pixels)", cloud.role(), cloud.path(), cloud.width(), cloud.height()));
    const MaskBuffer mask = merge_cloud_masks_simple(
        cloud.read_band(1), shadow.read_band(1), product.read_band_nonzero(1), cloud.width(), cloud.height(), params);
    const std::string path = ctx.output_dir + "/merged_cloud_mask.tif";
    write_single_band_geotiff(path, fmt::format("output of task '{}'", ctx.task), cloud.grid(), mask.data(),
                              mask_geotiff_options());
    return OpOutputs{{"merged_cloud_mask", Artifact{path, "Sentinel2CloudMask", ""}}};
  };
  return op;
}

}  // namespace nimbus
