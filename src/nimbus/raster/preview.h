// PNG quicklooks: true colour with the mask's classes overlaid, a legend strip below,
// and the georeferencing as a world file and an .aux.xml sidecar.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "nimbus/core/large_buffer.h"
#include "nimbus/raster/raster_reader.h"
#include "nimbus/tiling/pixel_window.h"

namespace nimbus {

// What a preview shows at one scene pixel.
enum PreviewClass : std::uint8_t { kPreviewClear = 0, kPreviewCloud = 1, kPreviewShadow = 2, kPreviewNodata = 3 };

// Overlay colours (RGB): cloud magenta, shadow yellow, blended 2:3 into the true colour;
// no data is a hatch of two neutral greys, whatever lies beneath.
inline constexpr std::array<std::uint8_t, 3> kPreviewCloudRgb{255, 0, 255};
inline constexpr std::array<std::uint8_t, 3> kPreviewShadowRgb{255, 220, 0};
inline constexpr std::uint8_t kPreviewHatchLight = 150;
inline constexpr std::uint8_t kPreviewHatchDark = 110;
// The longest side of the image part of a preview (never enlarged).
inline constexpr int kPreviewMaxSize = 1024;

struct Preview {
  std::string png;       // the encoded PNG: the image, then the legend strip
  int image_width = 0;   // the image part (the legend strip lies below it)
  int image_height = 0;
  int legend_height = 0;
  // The image part's georeferencing (GDAL order): the window's grid with pixels
  // scaled to the preview's size; has_geotransform false when the scene has none.
  GridInfo grid;
};

// Renders bands B04/B03/B02 (bands 4, 3, 2 of the 12-band stack; band 1 grey for
// fewer bands) of `window`, each stretched from its 2nd to 98th percentile, scaled so
// the longest side is at most max_size pixels (never enlarged: W x H becomes
// round(W*s) x round(H*s), s = min(1, max_size / max(W, H))). `classes` holds one
// PreviewClass per window pixel; a preview pixel takes the class covering at least
// half of the scene pixels it shows: no data first, else cloud or shadow (the more
// common of the two), else clear. Below the image, a legend strip names the colours.
Preview render_mask_preview(const RasterReader& scene, const PixelWindow& window, const MaskBuffer& classes,
                            int max_size = kPreviewMaxSize);

// A world file (six lines: pixel width, rotation, rotation, pixel height, x and y of
// the centre of the top-left pixel) for the preview's image part.
std::string world_file_text(const GridInfo& grid);
// The world file's name beside `png_path`: the extension's first and last letters +
// 'w' (p.png -> p.pgw), or + ".wld" without a three-letter extension.
std::string world_file_path(const std::string& png_path);
// GDAL's .aux.xml sidecar naming the preview's CRS (a world file has none).
std::string preview_aux_xml(const GridInfo& grid);

}  // namespace nimbus
