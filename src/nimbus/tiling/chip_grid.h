// The overlapping chip grid FarmVibes' ChipDataset lays over a raster.
//
// Read windows overlap; write windows partition the raster, each overlap being
// cut at its midpoint, so every output pixel comes from exactly one chip.
#pragma once

#include <vector>

#include "nimbus/tiling/pixel_window.h"

namespace nimbus {

// One chip along one axis, in raster pixel coordinates.
struct ChipSpan {
  int read_start;   // first pixel fed to the model
  int read_end;     // one past the last pixel fed to the model (read_start + chip)
  int write_start;  // first pixel this chip owns in the output
  int write_end;    // one past the last pixel this chip owns

  int chip_start() const { return write_start - read_start; }  // owned range in chip coordinates
  int chip_end() const { return write_end - read_start; }
};

// Step between chip starts: trunc(chip * (1 - overlap)), as Python's int() does.
// Throws InputError when the step would not advance (overlap >= 1 or < 0).
int chip_step(int chip_size, double overlap);

// Chips covering [0, dim) with the given chip size and step, per the spec's
// linspace + round-half-even starts and floor-midpoint write boundaries.
// Throws InputError when dim < chip_size; `axis_name` goes into that message.
std::vector<ChipSpan> chip_spans(int dim, int chip_size, int step, const char* axis_name = "dimension");

struct Chip {
  int index;  // row-major position in the grid
  ChipSpan rows;
  ChipSpan cols;
};

// Row-major cartesian product of the row and column spans.
class ChipGrid {
 public:
  ChipGrid(int width, int height, int chip_size, double overlap);

  int chip_size() const { return chip_size_; }
  int step() const { return step_; }
  const std::vector<ChipSpan>& row_spans() const { return rows_; }
  const std::vector<ChipSpan>& col_spans() const { return cols_; }
  int size() const { return static_cast<int>(rows_.size() * cols_.size()); }
  Chip chip(int index) const;
  // Row-major indices of the chips whose read window overlaps `window`: every chip
  // that contributes to a pixel of it, with the midpoint cut or the linear blend.
  std::vector<int> chips_meeting(const PixelWindow& window) const;

 private:
  int chip_size_;
  int step_;
  std::vector<ChipSpan> rows_;
  std::vector<ChipSpan> cols_;
};

}  // namespace nimbus
