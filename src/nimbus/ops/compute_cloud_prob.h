// Op compute_cloud_prob: cloud probability of a Sentinel-2 raster.
// The model gets raw DN; probability = softmax of its 2 logits, class 1.
#pragma once

#include "nimbus/ops/chip_prediction.h"

namespace nimbus {

const ProbabilityHead& cloud_probability_head();

inline std::vector<float> compute_cloud_prob(const RasterReader& scene, InferenceBackend& model,
                                             const ChipPredictionParams& params, const ChipProgress& progress = {}) {
  return predict_probability(scene, model, cloud_probability_head(), params, progress);
}

}  // namespace nimbus
