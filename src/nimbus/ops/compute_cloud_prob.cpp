#include "nimbus/ops/compute_cloud_prob.h"

namespace nimbus {

const ProbabilityHead& cloud_probability_head() {
  static const ProbabilityHead head{"compute_cloud_prob", "cloud model (--cloud-model)", 1.0f,
                                    Activation::SoftmaxClass1};
  return head;
}

}  // namespace nimbus
