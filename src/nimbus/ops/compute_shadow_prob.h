// Op compute_shadow_prob: cloud-shadow probability of a Sentinel-2 raster.
// The model gets DN x 1e-4 (float32); probability = sigmoid of its one logit.
#pragma once

#include "nimbus/ops/chip_prediction.h"

namespace nimbus {

// How the op turns raster values into model input and scores into probability.
const ProbabilityHead& shadow_probability_head();

}  // namespace nimbus
