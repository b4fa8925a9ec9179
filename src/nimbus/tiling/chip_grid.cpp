#include "nimbus/tiling/chip_grid.h"

#include <cmath>

#include <fmt/format.h>

#include "nimbus/core/error.h"

namespace nimbus {

int chip_step(int chip_size, double overlap) {
  if (chip_size <= 0) {
    throw InputError(fmt::format("window size must be positive, got {}; use e.g. @[window] 512", chip_size));
  }
  if (!(overlap >= 0.0 && overlap < 1.0)) {
    throw InputError(fmt::format("overlap must be in [0, 1), got {}; use e.g. @[overlap] 0.25", overlap));
  }
  // Python int() truncates toward zero; the product is a double as in Python.
  const int step = static_cast<int>(static_cast<double>(chip_size) * (1.0 - overlap));
  if (step <= 0) {
    throw InputError(fmt::format("overlap {} with window {} gives a step of {} pixels; lower the overlap", overlap,
                                 chip_size, step));
  }
  return step;
}

std::vector<ChipSpan> chip_spans(int dim, int chip_size, int step, const char* axis_name) {
  if (dim < chip_size) {
    throw InputError(fmt::format("raster {} is {} pixels, smaller than the {}-pixel chip; use a larger raster or a "
                                 "smaller @[window] (the model must accept it)",
                                 axis_name, dim, chip_size));
  }
  const int span = dim - chip_size;
  int n = static_cast<int>(std::ceil(static_cast<double>(span) / static_cast<double>(step))) + 1;
  if (dim > chip_size && n < 2) n = 2;

  std::vector<int> starts(n);
  for (int i = 0; i < n; ++i) {
    // numpy.linspace(0, span, n): i * (span / (n - 1)), last element exact; then
    // numpy.round, which rounds halves to even (std::nearbyint in the default mode).
    const double v = (i == n - 1) ? static_cast<double>(span)
                                  : static_cast<double>(i) * (static_cast<double>(span) / static_cast<double>(n - 1));
    starts[i] = static_cast<int>(std::nearbyint(v));
  }

  std::vector<ChipSpan> spans(n);
  for (int i = 0; i < n; ++i) {
    spans[i].read_start = starts[i];
    spans[i].read_end = starts[i] + chip_size;
  }
  spans[0].write_start = starts[0];
  for (int k = 0; k + 1 < n; ++k) {
    // Non-negative ints, so integer division is the floor of the midpoint.
    const int boundary = (spans[k].read_end + spans[k + 1].read_start) / 2;
    spans[k].write_end = boundary;
    spans[k + 1].write_start = boundary;
  }
  spans[n - 1].write_end = spans[n - 1].read_end;
  return spans;
}

ChipGrid::ChipGrid(int width, int height, int chip_size, double overlap)
    : chip_size_(chip_size),
      step_(chip_step(chip_size, overlap)),
      rows_(chip_spans(height, chip_size, step_, "height")),
      cols_(chip_spans(width, chip_size, step_, "width")) {}

Chip ChipGrid::chip(int index) const {
  const int ncols = static_cast<int>(cols_.size());
  return Chip{index, rows_[index / ncols], cols_[index % ncols]};
}

std::vector<int> ChipGrid::chips_meeting(const PixelWindow& window) const {
  std::vector<int> indices;
  const int ncols = static_cast<int>(cols_.size());
  for (int r = 0; r < static_cast<int>(rows_.size()); ++r) {
    const ChipSpan& rs = rows_[static_cast<std::size_t>(r)];
    if (rs.read_end <= window.y0 || rs.read_start >= window.y1()) continue;
    for (int c = 0; c < ncols; ++c) {
      const ChipSpan& cs = cols_[static_cast<std::size_t>(c)];
      if (cs.read_end <= window.x0 || cs.read_start >= window.x1()) continue;
      indices.push_back(r * ncols + c);
    }
  }
  return indices;
}

}  // namespace nimbus
