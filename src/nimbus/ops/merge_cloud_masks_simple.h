// Op merge_cloud_masks_simple: threshold the cloud and shadow probabilities,
// OR them with the product mask, dilate, optionally clean small components.
#pragma once

#include <cstdint>
#include <vector>

#include "nimbus/core/large_buffer.h"

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
MaskBuffer merge_cloud_masks_simple(const FloatBuffer& cloud_probability,
                                                   const FloatBuffer& shadow_probability,
                                                   const MaskBuffer& product_nonzero, int width,
                                                   int height, const MergeParams& params);

// The merge after thresholding: `mask` holds (cloud > thr) | (shadow > thr);
// ORs the product mask in, dilates and cleans, in place.
void finish_merge(MaskBuffer& mask, const MaskBuffer& product_nonzero, int width,
                  int height, const MergeParams& params);

}  // namespace nimbus
