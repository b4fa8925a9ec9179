#include "nimbus/tiling/chip_grid.h"

#include <gtest/gtest.h>

#include "nimbus/core/error.h"

namespace nimbus {
namespace {

struct Expected {
  int dim;
  std::vector<int> read_starts;
  std::vector<int> write_starts;
  std::vector<int> chip_starts;
  std::vector<int> chip_ends;
};

// Printed in test names by CTest's discovery: the dimension says which vector it is.
void PrintTo(const Expected& e, std::ostream* os) { *os << "dim " << e.dim; }

// Test vectors from the spec (chip 512, step 384).
class ChipSpansTest : public ::testing::TestWithParam<Expected> {};

TEST_P(ChipSpansTest, MatchesSpecVectors) {
  const Expected& e = GetParam();
  const auto spans = chip_spans(e.dim, 512, 384);
  ASSERT_EQ(spans.size(), e.read_starts.size());
  for (std::size_t i = 0; i < spans.size(); ++i) {
    EXPECT_EQ(spans[i].read_start, e.read_starts[i]) << "chip " << i;
    EXPECT_EQ(spans[i].read_end, e.read_starts[i] + 512);
    EXPECT_EQ(spans[i].write_start, e.write_starts[i]) << "chip " << i;
    EXPECT_EQ(spans[i].chip_start(), e.chip_starts[i]) << "chip " << i;
    EXPECT_EQ(spans[i].chip_end(), e.chip_ends[i]) << "chip " << i;
  }
  EXPECT_EQ(spans.back().write_end, e.dim);
}

INSTANTIATE_TEST_SUITE_P(Spec, ChipSpansTest,
                         ::testing::Values(Expected{512, {0}, {0}, {0}, {512}},
                                           Expected{513, {0, 1}, {0, 256}, {0, 255}, {256, 512}},
                                           Expected{600, {0, 88}, {0, 300}, {0, 212}, {300, 512}},
                                           Expected{896, {0, 384}, {0, 448}, {0, 64}, {448, 512}},
                                           Expected{897, {0, 192, 385}, {0, 352, 544}, {0, 160, 159}, {352, 352, 512}},
                                           Expected{1000, {0, 244, 488}, {0, 378, 622}, {0, 134, 134},
                                                    {378, 378, 512}}),
                         [](const ::testing::TestParamInfo<Expected>& info) { return "D" + std::to_string(info.param.dim); });

TEST(ChipSpans, FullTileHas29ChipsWithSpecStarts) {
  const auto spans = chip_spans(10980, 512, 384);
  const std::vector<int> starts{0,    374,  748,  1122, 1495, 1869, 2243, 2617, 2991, 3365,
                                3739, 4112, 4486, 4860, 5234, 5608, 5982, 6356, 6729, 7103,
                                7477, 7851, 8225, 8599, 8973, 9346, 9720, 10094, 10468};
  const std::vector<int> writes{0,    443,  817,  1191, 1564, 1938, 2312, 2686, 3060, 3434,
                                3808, 4181, 4555, 4929, 5303, 5677, 6051, 6425, 6798, 7172,
                                7546, 7920, 8294, 8668, 9042, 9415, 9789, 10163, 10537};
  ASSERT_EQ(spans.size(), 29u);
  for (std::size_t i = 0; i < spans.size(); ++i) {
    EXPECT_EQ(spans[i].read_start, starts[i]);
    EXPECT_EQ(spans[i].write_start, writes[i]);
  }
}

TEST(ChipSpans, WriteWindowsPartitionEverySize) {
  for (int dim = 512; dim < 3000; ++dim) {
    const auto spans = chip_spans(dim, 512, 384);
    int expected_start = 0;
    for (const auto& s : spans) {
      ASSERT_EQ(s.write_start, expected_start) << "dim " << dim;
      ASSERT_LE(s.read_start, s.write_start);
      ASSERT_LE(s.write_end, s.read_end);
      ASSERT_LT(s.write_start, s.write_end);
      expected_start = s.write_end;
    }
    ASSERT_EQ(expected_start, dim);
  }
}

TEST(ChipSpans, SmallerThanChipIsAnInputError) {
  EXPECT_THROW(chip_spans(511, 512, 384), InputError);
}

TEST(ChipStep, TruncatesLikePythonInt) {
  EXPECT_EQ(chip_step(512, 0.25), 384);
  EXPECT_EQ(chip_step(512, 0.0), 512);
  EXPECT_EQ(chip_step(100, 0.333), 66);  // 66.7 truncated
  EXPECT_THROW(chip_step(512, 1.0), InputError);
  EXPECT_THROW(chip_step(512, -0.1), InputError);
  EXPECT_THROW(chip_step(512, 0.999), InputError);  // step 0
  EXPECT_THROW(chip_step(0, 0.25), InputError);
}

TEST(ChipGrid, EnumeratesRowMajor) {
  const ChipGrid grid(1000, 600, 512, 0.25);
  ASSERT_EQ(grid.size(), 6);  // 2 rows x 3 cols
  EXPECT_EQ(grid.chip(1).rows.read_start, 0);
  EXPECT_EQ(grid.chip(1).cols.read_start, 244);
  EXPECT_EQ(grid.chip(3).rows.read_start, 88);
  EXPECT_EQ(grid.chip(3).cols.read_start, 0);
}

TEST(ChipGrid, ChipsMeetingAWindowAreThoseWhoseReadWindowOverlapsIt) {
  const ChipGrid grid(1000, 600, 512, 0.25);  // cols read 0/244/488 (+512), rows 0/88
  EXPECT_EQ(grid.chips_meeting(PixelWindow{0, 0, 1, 1}), (std::vector<int>{0}));
  EXPECT_EQ(grid.chips_meeting(PixelWindow{512, 0, 1, 1}), (std::vector<int>{1, 2}));  // col 0 ends at 512
  EXPECT_EQ(grid.chips_meeting(PixelWindow{600, 550, 10, 10}), (std::vector<int>{4, 5}));
  EXPECT_EQ(grid.chips_meeting(PixelWindow{0, 0, 1000, 600}), (std::vector<int>{0, 1, 2, 3, 4, 5}));
}

TEST(PixelWindow, GrowsAndClampsToTheRaster) {
  const PixelWindow w{5, 90, 10, 8};
  const PixelWindow g = w.grown(7, 100, 100);
  EXPECT_EQ(g.x0, 0);
  EXPECT_EQ(g.y0, 83);
  EXPECT_EQ(g.x1(), 22);
  EXPECT_EQ(g.y1(), 100);
  EXPECT_EQ(g.text(), "0,83,22,17");
}

}  // namespace
}  // namespace nimbus
