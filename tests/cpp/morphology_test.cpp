#include "nimbus/ops/morphology.h"

#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <random>

#include <opencv2/imgproc.hpp>

#include "nimbus/ops/merge_cloud_masks_simple.h"
#include "nimbus/ops/packed_mask.h"

namespace nimbus {
namespace {

TEST(DiskFootprint, PixelCountsMatchSkimage) {
  const int expected[] = {1, 5, 13, 29, 49, 81, 113};
  for (int r = 0; r <= 6; ++r) {
    const auto fp = disk_footprint(r);
    EXPECT_EQ(std::accumulate(fp.begin(), fp.end(), 0), expected[r]) << "radius " << r;
  }
}

TEST(DiskFootprint, Radius5RowHalfWidths) {
  const auto fp = disk_footprint(5);
  const int half_widths[] = {0, 3, 4, 4, 4, 5, 4, 4, 4, 3, 0};
  for (int row = 0; row < 11; ++row) {
    int count = 0;
    for (int c = 0; c < 11; ++c) count += fp[row * 11 + c];
    EXPECT_EQ(count, 2 * half_widths[row] + 1) << "row " << row;
  }
}

TEST(DilateWithDisk, SinglePixelBecomesTheDisk) {
  const int w = 21, h = 21;
  nimbus::MaskBuffer mask(w * h, 0);
  mask[10 * w + 10] = 1;
  dilate_with_disk(mask, w, h, 5);
  const auto fp = disk_footprint(5);
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      const int dy = y - 10, dx = x - 10;
      const bool inside = std::abs(dy) <= 5 && std::abs(dx) <= 5 && fp[(dy + 5) * 11 + (dx + 5)];
      EXPECT_EQ(mask[y * w + x], inside ? 1 : 0) << x << "," << y;
    }
  }
}

TEST(DilateWithDisk, OutsideTheImageCountsAsClear) {
  const int w = 8, h = 8;
  nimbus::MaskBuffer mask(w * h, 0);
  dilate_with_disk(mask, w, h, 3);
  EXPECT_EQ(std::accumulate(mask.begin(), mask.end(), 0), 0);
}

TEST(RemoveSmallComponents, DropsSpecksUsingEightConnectivity) {
  const int w = 10, h = 10;
  nimbus::MaskBuffer mask(w * h, 0);
  // A diagonal pair is one 8-connected component of area 2.
  mask[1 * w + 1] = mask[2 * w + 2] = 1;
  // A lone pixel: area 1.
  mask[7 * w + 7] = 1;
  remove_small_components(mask, w, h, 2);
  EXPECT_EQ(mask[1 * w + 1], 1);
  EXPECT_EQ(mask[2 * w + 2], 1);
  EXPECT_EQ(mask[7 * w + 7], 0);
}

TEST(RemoveSmallComponents, FillsSmallHolesIncludingAtTheBorder) {
  const int w = 10, h = 10;
  nimbus::MaskBuffer mask(w * h, 1);
  mask[5 * w + 5] = 0;  // interior hole, area 1
  mask[0] = 0;          // border hole, area 1
  mask[9 * w + 0] = mask[9 * w + 1] = mask[9 * w + 2] = 0;  // border hole, area 3
  remove_small_components(mask, w, h, 2);
  EXPECT_EQ(mask[5 * w + 5], 1);
  EXPECT_EQ(mask[0], 1);
  EXPECT_EQ(mask[9 * w + 1], 0);
}

// Independent oracle: pixel labelling with OpenCV, clearing/filling by component area.
void remove_small_components_by_pixel_labels(MaskBuffer& mask, int w, int h, int min_area) {
  for (const std::uint8_t value : {std::uint8_t{1}, std::uint8_t{0}}) {
    cv::Mat m(h, w, CV_8U, mask.data());
    cv::Mat binary = (m == value) / 255;
    cv::Mat labels, stats, centroids;
    const int n = cv::connectedComponentsWithStats(binary, labels, stats, centroids, 8, CV_32S);
    for (int y = 0; y < h; ++y) {
      for (int x = 0; x < w; ++x) {
        const int label = labels.at<int>(y, x);
        if (label > 0 && label < n && stats.at<int>(label, cv::CC_STAT_AREA) < min_area) m.at<std::uint8_t>(y, x) = 1 - value;
      }
    }
  }
}

// Independent oracle for the bit-packed dilation: OpenCV's, border = 0.
MaskBuffer dilate_by_opencv(const MaskBuffer& mask, int w, int h, int radius) {
  std::vector<std::uint8_t> fp = disk_footprint(radius);
  const cv::Mat kernel(2 * radius + 1, 2 * radius + 1, CV_8U, fp.data());
  MaskBuffer out(mask.size());
  const cv::Mat src(h, w, CV_8U, const_cast<std::uint8_t*>(mask.data()));
  cv::Mat dst(h, w, CV_8U, out.data());
  cv::dilate(src, dst, kernel, cv::Point(-1, -1), 1, cv::BORDER_CONSTANT, cv::Scalar(0));
  return out;
}

TEST(DilateWithDisk, MatchesOpenCvOnRandomMasksAcrossWordBoundaries) {
  std::mt19937 rng(11);
  // Widths around multiples of 64 (the packed word size) and radii past one word.
  const int widths[] = {1, 7, 63, 64, 65, 127, 128, 129, 200};
  const int radii[] = {1, 2, 3, 5, 8, 13, 70};
  for (const int w : widths) {
    for (const int radius : radii) {
      const int h = 1 + static_cast<int>(rng() % 90);
      std::bernoulli_distribution cloud(0.01 + 0.05 * (rng() % 4));
      MaskBuffer mask(static_cast<std::size_t>(w) * h);
      for (auto& v : mask) v = cloud(rng) ? 1 : 0;
      const MaskBuffer expected = dilate_by_opencv(mask, w, h, radius);
      dilate_with_disk(mask, w, h, radius);
      ASSERT_EQ(mask, expected) << w << "x" << h << " radius " << radius;
    }
  }
}

TEST(PackedMask, RoundTripsAndKeepsPaddingClear) {
  const int w = 130, h = 3;
  MaskBuffer mask(static_cast<std::size_t>(w) * h, 0);
  mask[0] = mask[63] = mask[64] = mask[129] = mask[w + 77] = 1;
  mask[2 * w + 129] = 200;  // any non-zero byte is set
  const PackedMask packed = pack_mask(mask.data(), w, h);
  EXPECT_EQ(packed.words_per_row(), 3u);
  EXPECT_EQ(packed.row(0)[0], (std::uint64_t{1} << 63) | 1u);
  EXPECT_EQ(packed.row(0)[2], 2u);  // pixel 129 = bit 1 of word 2
  const PackedMask dilated = dilate_packed(packed, 5);
  EXPECT_EQ(dilated.row(0)[2] & ~packed.last_word_mask(), 0u);  // nothing past the right edge
  MaskBuffer back(mask.size());
  unpack_mask(packed, back.data());
  mask[2 * w + 129] = 1;
  EXPECT_EQ(back, mask);
}

TEST(RemoveSmallComponents, MatchesPixelLabellingOnRandomMasks) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 60; ++trial) {
    const int w = 1 + static_cast<int>(rng() % 97), h = 1 + static_cast<int>(rng() % 89);
    const double density = (trial % 6) / 5.0;  // 0, 0.2, ..., 1: empty, speckle, full
    std::bernoulli_distribution cloud(density);
    MaskBuffer mask(static_cast<std::size_t>(w) * h);
    for (auto& v : mask) v = cloud(rng) ? 1 : 0;
    const int min_area = 1 + static_cast<int>(rng() % 12);
    MaskBuffer expected = mask;
    remove_small_components_by_pixel_labels(expected, w, h, min_area);
    remove_small_components(mask, w, h, min_area);
    ASSERT_EQ(mask, expected) << w << "x" << h << " density " << density << " min_area " << min_area;
  }
}

TEST(RemoveSmallComponents, DiagonalRunsJoinAcrossRows) {
  // Two 2-pixel runs that only touch diagonally form one component of 4 (kept at min_area 4).
  const int w = 6, h = 2;
  MaskBuffer mask{1, 1, 0, 0, 0, 0,
                  0, 0, 1, 1, 0, 0};
  MaskBuffer kept = mask;
  remove_small_components(kept, w, h, 4);
  EXPECT_EQ(kept, mask);
  remove_small_components(mask, w, h, 5);
  EXPECT_EQ(mask, MaskBuffer(12, 0));
}

TEST(MergeCloudMasks, StrictFloat32Thresholds) {
  // float32(0.3) = 0.300000011920929: 0.3f itself is not above it.
  const nimbus::FloatBuffer cloud{0.3f, std::nextafter(0.3f, 1.0f), 0.0f, 100.0f};
  const nimbus::FloatBuffer shadow{0.0f, 0.0f, 0.2f, 0.0f};
  const nimbus::MaskBuffer product{0, 0, 0, 0};
  MergeParams p;
  p.closing_size = 0;
  const auto mask = merge_cloud_masks_simple(cloud, shadow, product, 4, 1, p);
  EXPECT_EQ(mask, (nimbus::MaskBuffer{0, 1, 0, 1}));
}

TEST(MergeCloudMasks, RejectsOutOfRangeParameters) {
  MergeParams p;
  p.cloud_prob_threshold = 1.5;
  EXPECT_THROW(validate(p), std::runtime_error);
  p = MergeParams{};
  p.closing_size = -1;
  EXPECT_THROW(validate(p), std::runtime_error);
  p = MergeParams{};
  p.min_area = -3;
  EXPECT_THROW(validate(p), std::runtime_error);
}

}  // namespace
}  // namespace nimbus
