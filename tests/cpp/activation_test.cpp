#include <gtest/gtest.h>

#include <cmath>

#include "nimbus/ops/compute_cloud_prob.h"
#include "nimbus/ops/compute_shadow_prob.h"

namespace nimbus {
namespace {

TEST(Activation, SoftmaxClassOneOfTwoLogits) {
  const float scores[2] = {0.5f, 2.0f};  // class 0, class 1 (plane stride 1)
  const float e0 = std::exp(0.5f - 2.0f);
  EXPECT_FLOAT_EQ(activate(cloud_probability_head(), scores, 1), 1.0f / (e0 + 1.0f));
}

TEST(Activation, SoftmaxIsStableForHugeLogits) {
  const float scores[2] = {1000.0f, 1000.0f};
  EXPECT_FLOAT_EQ(activate(cloud_probability_head(), scores, 1), 0.5f);
}

TEST(Activation, SigmoidAndItsOverflow) {
  const float zero = 0.0f, big_negative = -200.0f;
  EXPECT_FLOAT_EQ(activate(shadow_probability_head(), &zero, 1), 0.5f);
  EXPECT_EQ(activate(shadow_probability_head(), &big_negative, 1), 0.0f);
}

TEST(Heads, ScalesAndChannelsFollowTheSpec) {
  EXPECT_EQ(cloud_probability_head().input_scale, 1.0f);
  EXPECT_EQ(shadow_probability_head().input_scale, 1e-4f);
  EXPECT_EQ(cloud_probability_head().output_channels(), 2);
  EXPECT_EQ(shadow_probability_head().output_channels(), 1);
}

}  // namespace
}  // namespace nimbus
