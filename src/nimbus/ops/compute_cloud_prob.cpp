#include "nimbus/ops/compute_cloud_prob.h"

namespace nimbus {

const ProbabilityHead& cloud_probability_head() {
  static const ProbabilityHead head{"compute_cloud_prob", "cloud model (@[cloud_model])", 1.0f,
                                    Activation::SoftmaxClass1};
  return head;
}

}  // namespace nimbus

#include "nimbus/models/default_models.h"
#include "nimbus/ops/registry.h"

namespace nimbus {

OpDefinition compute_cloud_prob_definition() {
  return probability_op_definition(cloud_probability_head(), "cloud_probability",
                                   "/opt/terravibes/ops/resources/cloud_models", "cloud_model2_cpu.onnx",
                                   default_model_ref(default_cloud_model()),
                                   "Computes cloud probabilities using a convolutional segmentation model for L2A.");
}

}  // namespace nimbus
