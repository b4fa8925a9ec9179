// PNG quicklooks: true colour with the cloud mask overlaid.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "nimbus/core/large_buffer.h"
#include "nimbus/raster/raster_reader.h"

namespace nimbus {

// Writes a PNG (longest side at most max_size pixels) of bands B04/B03/B02
// (bands 4, 3, 2 of the 12-band stack; band 1 grey for fewer bands) with
// mask pixels tinted magenta and nodata pixels drawn as a grey diagonal hatch.
// `mask` and `nodata` are scene.width()*scene.height() 0/1; a preview pixel is
// hatched when about half or more of the scene pixels it covers are nodata. Writes
// `path` directly: give it an AtomicOutput's temporary path.
void write_mask_preview(const RasterReader& scene, const MaskBuffer& mask, const MaskBuffer& nodata,
                        const std::string& path, int max_size = 1024);

// The same for a window of the scene (an area of interest): `mask` and `nodata` are
// window-sized; mask pixels of 100 (outside a --crop-to-aoi polygon) are drawn as nodata.
void write_mask_preview(const RasterReader& scene, const PixelWindow& window, const MaskBuffer& mask,
                        const MaskBuffer& nodata, const std::string& path, int max_size = 1024);

}  // namespace nimbus
