// 0/1 masks with one bit per pixel: eight times less memory traffic than bytes for
// the whole-tile steps of the merge (threshold, dilation).
#pragma once

#include <cstddef>
#include <cstdint>

#include "nimbus/core/large_buffer.h"

namespace nimbus {

// Bit x % 64 of word x / 64 of a row is pixel x; rows are padded to whole words and
// padding bits are always 0.
class PackedMask {
 public:
  PackedMask(int width, int height);
  int width() const { return width_; }
  int height() const { return height_; }
  std::size_t words_per_row() const { return words_per_row_; }
  std::uint64_t* row(int y) { return bits_.data() + static_cast<std::size_t>(y) * words_per_row_; }
  const std::uint64_t* row(int y) const { return bits_.data() + static_cast<std::size_t>(y) * words_per_row_; }
  // The bits of the last word of a row that are pixels.
  std::uint64_t last_word_mask() const { return last_word_mask_; }

 private:
  int width_;
  int height_;
  std::size_t words_per_row_;
  std::uint64_t last_word_mask_;
  LargeBuffer<std::uint64_t> bits_;
};

// Bits of 64 consecutive bytes: bit i = (bytes[i] != 0).
std::uint64_t pack_bytes64(const std::uint8_t* bytes);

// bit = (bytes[i] != 0), rows in parallel.
PackedMask pack_mask(const std::uint8_t* bytes, int width, int height);

// bytes[i] = bit (0/1), rows in parallel.
void unpack_mask(const PackedMask& mask, std::uint8_t* bytes);

// scipy.ndimage.binary_dilation(mask, skimage.morphology.disk(radius), border_value=0).
PackedMask dilate_packed(const PackedMask& mask, int radius);

}  // namespace nimbus
