// Op compute_cloud_prob: cloud probability of a Sentinel-2 raster.
// The model gets raw DN; probability = softmax of its 2 logits, class 1.
#pragma once

#include "nimbus/ops/chip_prediction.h"

namespace nimbus {

// How the op turns raster values into model input and scores into probability.
const ProbabilityHead& cloud_probability_head();

}  // namespace nimbus
