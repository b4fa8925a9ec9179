// Op merge_cloud_masks_simple: threshold the cloud and shadow probabilities,
// OR them with the product mask, dilate, optionally clean small components.
#pragma once

#include <cstdint>
#include <vector>

namespace nimbus {

struct MergeParams {
  double cloud_prob_threshold = 0.3;
  double shadow_prob_threshold = 0.2;
  int closing_size = 5;  // radius of the dilation disk (FarmVibes only dilates)
  int min_area = 0;      // 0 keeps all components
};

// Throws InputError for thresholds outside [0, 1] or negative sizes.
void validate(const MergeParams& params);

// All inputs are width*height, row-major. product_nonzero[i] = product mask != 0.
// Returns the 0/1 mask.
std::vector<std::uint8_t> merge_cloud_masks_simple(const std::vector<float>& cloud_probability,
                                                   const std::vector<float>& shadow_probability,
                                                   const std::vector<std::uint8_t>& product_nonzero, int width,
                                                   int height, const MergeParams& params);

// The merge after thresholding: `mask` holds (cloud > thr) | (shadow > thr);
// ORs the product mask in, dilates and cleans, in place.
void finish_merge(std::vector<std::uint8_t>& mask, const std::vector<std::uint8_t>& product_nonzero, int width,
                  int height, const MergeParams& params);

}  // namespace nimbus
