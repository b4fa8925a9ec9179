// Hand-written CPU kernels for the ops oneDNN 2.6 lacks, on the layouts its
// convolutions prefer: [N][ceil(C/b)][H][W][b] with b = 1 (plain NCHW), 8 or 16
// (blocked), or b = C (channels-last, NHWC). Each output element is computed by
// one thread in a fixed order, so results do not depend on the thread count.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace nimbus::kernels {

struct BlockedShape {
  std::int64_t n = 1, c = 1, h = 1, w = 1;
  int block = 1;  // 1, 8, 16, or c for channels-last
  std::int64_t channel_blocks() const { return (c + block - 1) / block; }
  std::int64_t elements() const { return n * channel_blocks() * h * w * block; }
};

// How a source coordinate is derived from a destination one (ONNX Resize).
enum class CoordinateMode { HalfPixel, PytorchHalfPixel, AlignCorners, Asymmetric, TfHalfPixelForNn };
enum class ResizeMode { Nearest, Linear };
enum class NearestRounding { RoundPreferFloor, RoundPreferCeil, Floor, Ceil };

struct ResizeParams {
  ResizeMode mode = ResizeMode::Linear;
  CoordinateMode coordinates = CoordinateMode::HalfPixel;
  NearestRounding rounding = NearestRounding::RoundPreferFloor;
  // Scales as the graph states them (output / input), used by the coordinate
  // transform when the graph gave scales rather than sizes; 0 = derive from sizes.
  float scale_h = 0.0f, scale_w = 0.0f;
};

// Spatial resize of `src` (shape `in`) into `dst` (same n, c, block; out_h x out_w);
// with `accumulate`, adds the resized values to what `dst` holds.
void resize(const float* src, const BlockedShape& in, float* dst, std::int64_t out_h, std::int64_t out_w,
            const ResizeParams& params, bool accumulate = false);

// A pointwise activation applied after normalisation.
struct Activation {
  enum class Kind { None, Relu, LeakyRelu, Clip } kind = Kind::None;
  float alpha = 0.0f, beta = 0.0f;  // LeakyRelu slope; Clip bounds
};

// Group normalisation: per (n, group) mean and variance over the group's
// channels and all pixels, then y = (x - mean) / sqrt(var + eps) * gamma[c] + beta[c],
// then `activation`. `gamma`/`beta` have c entries; padded lanes are written as 0.
void group_norm(const float* src, float* dst, const BlockedShape& shape, int groups, float epsilon,
                const std::vector<float>& gamma, const std::vector<float>& beta, const Activation& activation);

}  // namespace nimbus::kernels
