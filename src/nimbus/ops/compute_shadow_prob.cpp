#include "nimbus/ops/compute_shadow_prob.h"

namespace nimbus {

const ProbabilityHead& shadow_probability_head() {
  // Sentinel2Raster.scale; numpy multiplies float32 by it in float32.
  static const ProbabilityHead head{"compute_shadow_prob", "shadow model (@[shadow_model])", 1e-4f,
                                    Activation::Sigmoid};
  return head;
}

}  // namespace nimbus

#include "nimbus/models/default_models.h"
#include "nimbus/ops/registry.h"

namespace nimbus {

OpDefinition compute_shadow_prob_definition() {
  return probability_op_definition(shadow_probability_head(), "shadow_probability",
                                   "/opt/terravibes/ops/resources/shadow_models", "shadow.onnx",
                                   default_model_ref(default_shadow_model()),
                                   "Computes shadow probabilities using a convolutional segmentation model for L2A.");
}

}  // namespace nimbus
