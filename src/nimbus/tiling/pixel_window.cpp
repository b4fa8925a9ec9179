#include "nimbus/tiling/pixel_window.h"

#include <algorithm>

#include <fmt/format.h>

namespace nimbus {

PixelWindow PixelWindow::grown(int margin, int raster_width, int raster_height) const {
  PixelWindow g;
  g.x0 = std::max(0, x0 - margin);
  g.y0 = std::max(0, y0 - margin);
  g.width = std::min(raster_width, x1() + margin) - g.x0;
  g.height = std::min(raster_height, y1() + margin) - g.y0;
  return g;
}

std::string PixelWindow::text() const { return fmt::format("{},{},{},{}", x0, y0, width, height); }

}  // namespace nimbus
