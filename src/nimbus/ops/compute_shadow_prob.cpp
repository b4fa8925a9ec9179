#include "nimbus/ops/compute_shadow_prob.h"

namespace nimbus {

const ProbabilityHead& shadow_probability_head() {
  // Sentinel2Raster.scale; numpy multiplies float32 by it in float32.
  static const ProbabilityHead head{"compute_shadow_prob", "shadow model (--shadow-model)", 1e-4f,
                                    Activation::Sigmoid};
  return head;
}

}  // namespace nimbus
