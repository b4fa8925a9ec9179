#include "nimbus/ops/merge_cloud_masks_simple.h"

#include <cmath>

#include <fmt/format.h>

#include "nimbus/core/error.h"
#include "nimbus/ops/morphology.h"

namespace nimbus {

void validate(const MergeParams& p) {
  const auto check_threshold = [](double v, const char* name, const char* flag) {
    if (!(v >= 0.0 && v <= 1.0)) {
      throw InputError(fmt::format("parameter {} = {} is outside [0, 1]; pass a probability, e.g. {} 0.3", name, v,
                                   flag));
    }
  };
  check_threshold(p.cloud_prob_threshold, "cloud_prob_threshold", "--cloud-thr");
  check_threshold(p.shadow_prob_threshold, "shadow_prob_threshold", "--shadow-thr");
  if (p.closing_size < 0) {
    throw InputError(fmt::format("parameter closing_size = {} is negative; use 0 (no dilation) or more, default 5",
                                 p.closing_size));
  }
  if (p.min_area < 0) {
    throw InputError(fmt::format("parameter min_area = {} is negative; use 0 (keep everything) or more", p.min_area));
  }
}

std::vector<std::uint8_t> merge_cloud_masks_simple(const std::vector<float>& cloud_probability,
                                                   const std::vector<float>& shadow_probability,
                                                   const std::vector<std::uint8_t>& product_nonzero, int width,
                                                   int height, const MergeParams& params) {
  validate(params);
  const std::size_t n = static_cast<std::size_t>(width) * static_cast<std::size_t>(height);
  if (cloud_probability.size() != n || shadow_probability.size() != n || product_nonzero.size() != n) {
    throw InternalError("merge_cloud_masks_simple: input sizes differ from the grid");
  }
  // numpy compares a float32 array with a Python float in float32.
  const float cloud_thr = static_cast<float>(params.cloud_prob_threshold);
  const float shadow_thr = static_cast<float>(params.shadow_prob_threshold);
  std::vector<std::uint8_t> mask(n);
  for (std::size_t i = 0; i < n; ++i) {
    mask[i] = (cloud_probability[i] > cloud_thr) | (shadow_probability[i] > shadow_thr) | product_nonzero[i];
  }
  dilate_with_disk(mask, width, height, params.closing_size);
  remove_small_components(mask, width, height, params.min_area);
  return mask;
}

}  // namespace nimbus
