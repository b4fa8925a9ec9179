// Op compute_shadow_prob: cloud-shadow probability of a Sentinel-2 raster.
// The model gets DN x 1e-4 (float32); probability = sigmoid of its one logit.
#pragma once

#include "nimbus/ops/chip_prediction.h"

namespace nimbus {

const ProbabilityHead& shadow_probability_head();

inline std::vector<float> compute_shadow_prob(const RasterReader& scene, InferenceBackend& model,
                                              const ChipPredictionParams& params, const ChipProgress& progress = {}) {
  return predict_probability(scene, model, shadow_probability_head(), params, progress);
}

}  // namespace nimbus
