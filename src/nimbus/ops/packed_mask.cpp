#include "nimbus/ops/packed_mask.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <opencv2/core/utility.hpp>

#include "nimbus/ops/morphology.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace nimbus {
namespace {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "byte i of a loaded word is pixel i");

}  // namespace

std::uint64_t pack_bytes64(const std::uint8_t* bytes) {
#if defined(__SSE2__)
  std::uint64_t bits = 0;
  const __m128i zero = _mm_setzero_si128();
  for (int k = 0; k < 4; ++k) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(bytes + 16 * k));
    const auto is_zero = static_cast<std::uint32_t>(_mm_movemask_epi8(_mm_cmpeq_epi8(v, zero)));
    bits |= static_cast<std::uint64_t>(~is_zero & 0xFFFFu) << (16 * k);
  }
  return bits;
#else
  std::uint64_t bits = 0;
  for (int i = 0; i < 64; ++i) bits |= static_cast<std::uint64_t>(bytes[i] != 0) << i;
  return bits;
#endif
}

namespace {

// 8 bits -> 8 bytes of 0/1.
struct ByteSpreadTable {
  std::uint64_t spread[256];
  ByteSpreadTable() {
    for (int b = 0; b < 256; ++b) {
      std::uint64_t v = 0;
      for (int i = 0; i < 8; ++i) v |= static_cast<std::uint64_t>((b >> i) & 1) << (8 * i);
      spread[b] = v;
    }
  }
};

// dst[k] = src[k] shifted `s` pixels towards higher x (0 < s < 64), across words.
inline std::uint64_t shifted_up(const std::uint64_t* src, std::size_t k, int s) {
  return (src[k] << s) | (k > 0 ? src[k - 1] >> (64 - s) : 0);
}
// ... towards lower x.
inline std::uint64_t shifted_down(const std::uint64_t* src, std::size_t k, std::size_t n, int s) {
  return (src[k] >> s) | (k + 1 < n ? src[k + 1] << (64 - s) : 0);
}

}  // namespace

PackedMask::PackedMask(int width, int height)
    : width_(width),
      height_(height),
      words_per_row_((static_cast<std::size_t>(width) + 63) / 64),
      last_word_mask_(width % 64 == 0 ? ~std::uint64_t{0} : (std::uint64_t{1} << (width % 64)) - 1),
      bits_(words_per_row_ * static_cast<std::size_t>(height), 0) {}

PackedMask pack_mask(const std::uint8_t* bytes, int width, int height) {
  PackedMask out(width, height);
  const std::size_t full = static_cast<std::size_t>(width) / 64;
  cv::parallel_for_(cv::Range(0, height), [&](const cv::Range& rows) {
    for (int y = rows.start; y < rows.end; ++y) {
      const std::uint8_t* src = bytes + static_cast<std::size_t>(y) * width;
      std::uint64_t* dst = out.row(y);
      for (std::size_t k = 0; k < full; ++k) dst[k] = pack_bytes64(src + 64 * k);
      if (full < out.words_per_row()) {
        std::uint64_t bits = 0;
        for (int x = static_cast<int>(64 * full); x < width; ++x) bits |= static_cast<std::uint64_t>(src[x] != 0) << (x % 64);
        dst[full] = bits;
      }
    }
  });
  return out;
}

void unpack_mask(const PackedMask& mask, std::uint8_t* bytes) {
  static const ByteSpreadTable table;
  const int width = mask.width();
  const std::size_t full = static_cast<std::size_t>(width) / 64;
  cv::parallel_for_(cv::Range(0, mask.height()), [&](const cv::Range& rows) {
    for (int y = rows.start; y < rows.end; ++y) {
      const std::uint64_t* src = mask.row(y);
      std::uint8_t* dst = bytes + static_cast<std::size_t>(y) * width;
      for (std::size_t k = 0; k < full; ++k) {
        const std::uint64_t w = src[k];
        for (int b = 0; b < 8; ++b) {
          const std::uint64_t spread = table.spread[(w >> (8 * b)) & 0xFF];
          std::memcpy(dst + 64 * k + 8 * b, &spread, 8);
        }
      }
      for (int x = static_cast<int>(64 * full); x < width; ++x) dst[x] = (src[full] >> (x % 64)) & 1;
    }
  });
}

namespace {

// floor(sqrt(v)), exact for 0 <= v < 2^62.
std::int64_t integer_sqrt(std::int64_t v) {
  auto r = static_cast<std::int64_t>(std::sqrt(static_cast<double>(v)));
  while (r > 0 && r * r > v) --r;
  while ((r + 1) * (r + 1) <= v) ++r;
  return r;
}

// Half width of the disk's row at vertical offset d (0 <= d <= radius): the largest
// dx with dx^2 + d^2 <= radius^2, as in skimage.morphology.disk. Exact in 64 bits.
std::vector<int> disk_half_widths(int radius) {
  std::vector<int> half(static_cast<std::size_t>(radius) + 1);
  const std::int64_t r2 = static_cast<std::int64_t>(radius) * radius;
  for (int d = 0; d <= radius; ++d) {
    half[static_cast<std::size_t>(d)] = static_cast<int>(integer_sqrt(r2 - static_cast<std::int64_t>(d) * d));
  }
  return half;
}

// Large disks: a pixel is set iff some set pixel q in its column band satisfies
// |dx| <= half[|dy|]. With dist = the distance to the nearest set pixel in each
// column (capped at radius + 1), row y's pixel x' paints [x' - half[dist], x' + half[dist]].
// Memory: one uint32 per pixel, whatever the radius; time: two passes over the pixels.
PackedMask dilate_by_column_distance(const PackedMask& mask, int radius) {
  const int width = mask.width(), height = mask.height();
  const std::vector<int> half = disk_half_widths(radius);
  const std::uint32_t far = static_cast<std::uint32_t>(radius) + 1;
  const std::size_t w = static_cast<std::size_t>(width);
  LargeBuffer<std::uint32_t> dist(w * static_cast<std::size_t>(height));
  const auto bit = [&](int y, int x) { return (mask.row(y)[x / 64] >> (x % 64)) & 1; };
  cv::parallel_for_(cv::Range(0, width), [&](const cv::Range& cols) {
    for (int x = cols.start; x < cols.end; ++x) {
      std::uint32_t d = far;
      for (int y = 0; y < height; ++y) {
        d = bit(y, x) ? 0 : std::min(far, d + 1);
        dist[static_cast<std::size_t>(y) * w + x] = d;
      }
      d = far;
      for (int y = height - 1; y >= 0; --y) {
        std::uint32_t& here = dist[static_cast<std::size_t>(y) * w + x];
        d = here == 0 ? 0 : std::min(far, d + 1);
        here = std::min(here, d);
      }
    }
  });
  PackedMask out(width, height);
  cv::parallel_for_(cv::Range(0, height), [&](const cv::Range& rows) {
    std::vector<int> reach(w);  // reach[lo] = the furthest right end of an interval starting at lo
    for (int y = rows.start; y < rows.end; ++y) {
      std::fill(reach.begin(), reach.end(), -1);
      const std::uint32_t* row = dist.data() + static_cast<std::size_t>(y) * w;
      for (int x = 0; x < width; ++x) {
        if (row[x] > static_cast<std::uint32_t>(radius)) continue;
        const int h = half[row[x]];
        const int lo = std::max(0, x - h);
        reach[static_cast<std::size_t>(lo)] = std::max(reach[static_cast<std::size_t>(lo)], std::min(width - 1, x + h));
      }
      std::uint64_t* dst = out.row(y);
      int covered = -1;
      for (int x = 0; x < width; ++x) {
        covered = std::max(covered, reach[static_cast<std::size_t>(x)]);
        if (covered >= x) dst[x / 64] |= std::uint64_t{1} << (x % 64);
      }
    }
  });
  return out;
}

// Above this many distinct row widths the per-width planes would cost more memory
// than the column-distance method (4 bytes per pixel).
constexpr std::size_t kMaxWidthPlanes = 24;

}  // namespace

PackedMask dilate_packed(const PackedMask& mask, int requested_radius) {
  const int width = mask.width(), height = mask.height();
  if (requested_radius <= 0 || width <= 0 || height <= 0) return mask;
  // A disk reaching past the raster's diagonal covers the raster from any pixel:
  // every larger radius gives the same mask, so the work never exceeds the raster's.
  const double diagonal = std::hypot(static_cast<double>(width - 1), static_cast<double>(height - 1));
  const int radius = static_cast<int>(std::min<double>(requested_radius, std::ceil(diagonal) + 1.0));
  // The disk is a stack of horizontal segments: row dy spans |dx| <= half_width[dy].
  // Each input row is dilated horizontally once per distinct half width; an output row
  // is the OR of those rows over dy.
  const int span = 2 * radius + 1;
  const std::vector<int> half = disk_half_widths(radius);
  std::vector<int> half_width(static_cast<std::size_t>(span), 0);
  for (int dy = 0; dy < span; ++dy) half_width[static_cast<std::size_t>(dy)] = half[static_cast<std::size_t>(std::abs(dy - radius))];
  std::vector<int> widths(half);
  std::sort(widths.begin(), widths.end());
  widths.erase(std::unique(widths.begin(), widths.end()), widths.end());
  if (widths.size() > kMaxWidthPlanes) return dilate_by_column_distance(mask, radius);
  std::vector<std::size_t> plane_of(static_cast<std::size_t>(span));
  for (int dy = 0; dy < span; ++dy) {
    plane_of[static_cast<std::size_t>(dy)] = static_cast<std::size_t>(
        std::lower_bound(widths.begin(), widths.end(), half_width[static_cast<std::size_t>(dy)]) - widths.begin());
  }
  const std::size_t n = mask.words_per_row();
  const std::uint64_t tail = mask.last_word_mask();

  // Horizontal: plane p holds every row dilated by widths[p] (p = 0 may be width 0).
  std::vector<PackedMask> planes;
  planes.reserve(widths.size());
  for (std::size_t p = 0; p < widths.size(); ++p) planes.emplace_back(width, height);
  cv::parallel_for_(cv::Range(0, height), [&](const cv::Range& rows) {
    for (int y = rows.start; y < rows.end; ++y) {
      const std::uint64_t* src = mask.row(y);
      int done = 0;
      const std::uint64_t* previous = src;
      for (std::size_t p = 0; p < widths.size(); ++p) {
        std::uint64_t* dst = planes[p].row(y);
        std::memcpy(dst, previous, n * sizeof(std::uint64_t));
        for (int d = done + 1; d <= widths[p]; ++d) {
          // Shifts of 64 or more pixels move whole words.
          const std::size_t word_shift = static_cast<std::size_t>(d / 64);
          const int bit_shift = d % 64;
          for (std::size_t k = 0; k < n; ++k) {
            std::uint64_t up = 0, down = 0;
            if (k >= word_shift) up = bit_shift ? shifted_up(src, k - word_shift, bit_shift) : src[k - word_shift];
            if (k + word_shift < n) {
              down = bit_shift ? shifted_down(src, k + word_shift, n, bit_shift) : src[k + word_shift];
            }
            dst[k] |= up | down;
          }
        }
        dst[n - 1] &= tail;  // pixels past the right edge stay 0
        done = widths[p];
        previous = dst;
      }
    }
  });

  // Vertical: OR of the rows y + dy, outside the image counting as 0.
  PackedMask out(width, height);
  cv::parallel_for_(cv::Range(0, height), [&](const cv::Range& rows) {
    for (int y = rows.start; y < rows.end; ++y) {
      std::uint64_t* dst = out.row(y);
      for (int dy = -radius; dy <= radius; ++dy) {
        const int yy = y + dy;
        if (yy < 0 || yy >= height) continue;
        const std::uint64_t* src = planes[plane_of[static_cast<std::size_t>(dy + radius)]].row(yy);
        for (std::size_t k = 0; k < n; ++k) dst[k] |= src[k];
      }
    }
  });
  return out;
}

}  // namespace nimbus
