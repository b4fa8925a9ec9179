// Binary morphology on 0/1 uint8 masks, bit-exact with scikit-image/scipy.
#pragma once

#include <cstdint>
#include <vector>

#include "nimbus/core/large_buffer.h"

namespace nimbus {

// The largest dilation radius accepted (closing_size): wider than a Sentinel-2
// tile's diagonal (15 528 px at 10 m), so any larger disk would mask the whole tile
// from one cloudy pixel.
inline constexpr int kMaxClosingSize = 16384;

// skimage.morphology.disk(radius): (2r+1)^2 footprint, offset (dy, dx) set iff dx^2 + dy^2 <= r^2.
// radius in [0, kMaxClosingSize].
std::vector<std::uint8_t> disk_footprint(int radius);

// scipy.ndimage.binary_dilation(mask, disk(radius), border_value=0), in place.
void dilate_with_disk(MaskBuffer& mask, int width, int height, int radius);

// FarmVibes remove_small_components on a 0/1 mask: clears 8-connected 1-components with fewer
// than min_area pixels, then fills 8-connected 0-components (holes, including
// those touching the border) with fewer than min_area pixels. In place.
void remove_small_components(MaskBuffer& mask, int width, int height, int min_area);

}  // namespace nimbus
