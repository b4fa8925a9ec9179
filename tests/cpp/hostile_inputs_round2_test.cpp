// Hostile inputs, round 2, at the library level: dilation radii far beyond the
// usual ones stay exact and bounded; parameter ranges.
#include <gtest/gtest.h>

#include <random>

#include "nimbus/core/error.h"
#include "nimbus/ops/merge_cloud_masks_simple.h"
#include "nimbus/ops/morphology.h"
#include "nimbus/ops/op_definition.h"
#include "nimbus/ops/packed_mask.h"

namespace nimbus {
namespace {

// scipy.ndimage.binary_dilation with disk(radius), border 0, the direct way.
MaskBuffer brute_force_dilation(const MaskBuffer& mask, int w, int h, int radius) {
  MaskBuffer out(mask.size(), 0);
  const long long r2 = static_cast<long long>(radius) * radius;
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      if (!mask[static_cast<std::size_t>(y) * w + x]) continue;
      for (int yy = std::max(0, y - radius); yy <= std::min(h - 1, y + radius); ++yy) {
        for (int xx = std::max(0, x - radius); xx <= std::min(w - 1, x + radius); ++xx) {
          const long long dx = xx - x, dy = yy - y;
          if (dx * dx + dy * dy <= r2) out[static_cast<std::size_t>(yy) * w + xx] = 1;
        }
      }
    }
  }
  return out;
}

MaskBuffer random_mask(int w, int h, double density, unsigned seed) {
  std::mt19937 rng(seed);
  std::bernoulli_distribution set(density);
  MaskBuffer m(static_cast<std::size_t>(w) * h);
  for (auto& v : m) v = set(rng) ? 1 : 0;
  return m;
}

// Radii past 24 distinct row widths take the column-distance path; both must equal scipy.
TEST(LargeRadiusDilation, EqualsTheDirectDilationOnBothPaths) {
  const int w = 131, h = 97;
  for (int radius : {1, 5, 17, 23, 31, 40, 64, 90}) {
    const MaskBuffer mask = random_mask(w, h, 0.002, 7u + static_cast<unsigned>(radius));
    MaskBuffer fast = mask;
    dilate_with_disk(fast, w, h, radius);
    EXPECT_EQ(fast, brute_force_dilation(mask, w, h, radius)) << "radius " << radius;
  }
}

TEST(LargeRadiusDilation, RadiusBeyondTheDiagonalCoversTheRaster) {
  const int w = 70, h = 3;
  MaskBuffer mask(static_cast<std::size_t>(w) * h, 0);
  mask[0] = 1;
  for (int radius : {70, 1000, kMaxClosingSize}) {
    MaskBuffer m = mask;
    dilate_with_disk(m, w, h, radius);
    EXPECT_EQ(m, brute_force_dilation(mask, w, h, 70)) << "radius " << radius;
  }
  // No set pixel: nothing to dilate, whatever the radius.
  MaskBuffer empty(static_cast<std::size_t>(w) * h, 0);
  dilate_with_disk(empty, w, h, kMaxClosingSize);
  EXPECT_EQ(empty, MaskBuffer(empty.size(), 0));
}

TEST(LargeRadiusDilation, EmptyRastersAreLeftAlone) {
  EXPECT_EQ(dilate_packed(PackedMask(0, 5), 5).height(), 5);
  EXPECT_EQ(dilate_packed(PackedMask(5, 0), 5).width(), 5);
}

TEST(MergeParams, ClosingSizeAboveTheMaximumIsAnInputError) {
  MergeParams p;
  p.closing_size = kMaxClosingSize;
  EXPECT_NO_THROW(validate(p));
  p.closing_size = kMaxClosingSize + 1;
  EXPECT_THROW(validate(p), InputError);
  p.closing_size = 2147483647;
  EXPECT_THROW(validate(p), InputError);
}

TEST(ParameterRange, IntegersBeyondIntAndTheDeclaredRangeAreReported) {
  const ParamSpec closing{"closing_size", ParamType::Int, 5, "", 0.0, 16384.0};
  EXPECT_EQ(parameter_range_problem(Json(5), closing), "");
  EXPECT_NE(parameter_range_problem(Json(4294967301LL), closing), "");
  EXPECT_NE(parameter_range_problem(Json(-1), closing), "");
  EXPECT_NE(parameter_range_problem(Json(18446744073709551615ULL), closing), "");
  const ParamSpec any_int{"n", ParamType::Int, 0, ""};
  EXPECT_NE(parameter_range_problem(Json(2147483648LL), any_int), "");
  EXPECT_EQ(parameter_range_problem(Json(2147483647LL), any_int), "");
  const ParamSpec thr{"t", ParamType::Float, 0.3, "", 0.0, 1.0};
  EXPECT_EQ(parameter_range_problem(Json(0.5), thr), "");
  EXPECT_NE(parameter_range_problem(Json(std::numeric_limits<double>::infinity()), thr), "");
  EXPECT_NE(parameter_range_problem(Json(std::numeric_limits<double>::quiet_NaN()), thr), "");
}

}  // namespace
}  // namespace nimbus
