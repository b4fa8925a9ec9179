// A rectangle of raster pixels, e.g. the window an area of interest covers.
#pragma once

#include <string>

namespace nimbus {

// A rectangle of raster pixels: columns [x0, x0 + width), rows [y0, y0 + height).
struct PixelWindow {
  int x0 = 0;
  int y0 = 0;
  int width = 0;
  int height = 0;
  int x1() const { return x0 + width; }
  int y1() const { return y0 + height; }
  bool empty() const { return width <= 0 || height <= 0; }
  // This window grown by `margin` pixels on every side, clamped to a width x height raster.
  PixelWindow grown(int margin, int raster_width, int raster_height) const;
  // "x0,y0,width,height", as recorded in the NIMBUS_AOI_WINDOW tag.
  std::string text() const;
};

}  // namespace nimbus
