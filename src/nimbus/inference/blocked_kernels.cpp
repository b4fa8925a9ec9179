#include "nimbus/inference/blocked_kernels.h"

#include <algorithm>
#include <cmath>

namespace nimbus::kernels {
namespace {

// Source coordinate of destination index `x` along an axis of `in` -> `out` pixels.
double source_coordinate(std::int64_t x, std::int64_t in, std::int64_t out, float scale, CoordinateMode mode) {
  const double s = scale > 0.0f ? static_cast<double>(scale) : static_cast<double>(out) / static_cast<double>(in);
  const auto xd = static_cast<double>(x);
  switch (mode) {
    case CoordinateMode::HalfPixel:
      return (xd + 0.5) / s - 0.5;
    case CoordinateMode::PytorchHalfPixel:
      return out > 1 ? (xd + 0.5) / s - 0.5 : 0.0;
    case CoordinateMode::AlignCorners:
      // In float, as torch and onnxruntime compute it.
      return out == 1 ? 0.0
                      : static_cast<double>(static_cast<float>(x) * (static_cast<float>(in - 1) /
                                                                   static_cast<float>(out - 1)));
    case CoordinateMode::Asymmetric:
      return xd / s;
    case CoordinateMode::TfHalfPixelForNn:
      return (xd + 0.5) / s;
  }
  return 0.0;
}

struct AxisTaps {
  std::vector<std::int64_t> i0, i1;
  std::vector<float> w1;  // weight of i1; i0 gets 1 - w1
};

AxisTaps axis_taps(std::int64_t in, std::int64_t out, float scale, const ResizeParams& p) {
  AxisTaps t;
  t.i0.resize(static_cast<std::size_t>(out));
  t.i1.resize(static_cast<std::size_t>(out));
  t.w1.resize(static_cast<std::size_t>(out));
  for (std::int64_t x = 0; x < out; ++x) {
    const double src = source_coordinate(x, in, out, scale, p.coordinates);
    const auto k = static_cast<std::size_t>(x);
    if (p.mode == ResizeMode::Nearest) {
      double r = 0.0;
      const double frac = src - std::floor(src);
      switch (p.rounding) {
        case NearestRounding::RoundPreferFloor:
          r = frac == 0.5 ? std::floor(src) : std::round(src);
          break;
        case NearestRounding::RoundPreferCeil:
          r = frac == 0.5 ? std::ceil(src) : std::round(src);
          break;
        case NearestRounding::Floor:
          r = std::floor(src);
          break;
        case NearestRounding::Ceil:
          r = std::ceil(src);
          break;
      }
      const auto i = std::clamp<std::int64_t>(static_cast<std::int64_t>(r), 0, in - 1);
      t.i0[k] = t.i1[k] = i;
      t.w1[k] = 0.0f;
    } else {
      const auto f = static_cast<float>(std::clamp(src, 0.0, static_cast<double>(in - 1)));
      const auto i0 = static_cast<std::int64_t>(f);
      t.i0[k] = i0;
      t.i1[k] = std::min(i0 + 1, in - 1);
      t.w1[k] = f - static_cast<float>(i0);
    }
  }
  return t;
}

// B > 0: lanes known at compile time (1, 8, 16); B == 0: lanes = in.block (channels-last, one block of C).
template <int B, bool Accumulate>
void resize_rows(const float* src, const BlockedShape& in, float* dst, std::int64_t out_h, std::int64_t out_w,
                 const AxisTaps& ty, const AxisTaps& tx) {
  const std::int64_t lanes = B > 0 ? B : in.block;
  const std::int64_t planes = in.n * in.channel_blocks();
  const std::int64_t rows = planes * out_h;
#pragma omp parallel for schedule(static)
  for (std::int64_t r = 0; r < rows; ++r) {
    const std::int64_t plane = r / out_h, oy = r % out_h;
    const float* in_plane = src + plane * in.h * in.w * lanes;
    const float* top = in_plane + ty.i0[static_cast<std::size_t>(oy)] * in.w * lanes;
    const float* bottom = in_plane + ty.i1[static_cast<std::size_t>(oy)] * in.w * lanes;
    const float h1 = ty.w1[static_cast<std::size_t>(oy)], h0 = 1.0f - h1;
    float* out = dst + (plane * out_h + oy) * out_w * lanes;
    for (std::int64_t ox = 0; ox < out_w; ++ox) {
      const auto k = static_cast<std::size_t>(ox);
      const float w1 = tx.w1[k], w0 = 1.0f - w1;
      const float* a = top + tx.i0[k] * lanes;
      const float* b = top + tx.i1[k] * lanes;
      const float* c = bottom + tx.i0[k] * lanes;
      const float* d = bottom + tx.i1[k] * lanes;
      float* o = out + ox * lanes;
      for (std::int64_t lane = 0; lane < lanes; ++lane) {
        const float v = h0 * (w0 * a[lane] + w1 * b[lane]) + h1 * (w0 * c[lane] + w1 * d[lane]);
        if (Accumulate) {
          o[lane] += v;
        } else {
          o[lane] = v;
        }
      }
    }
  }
}

template <int B>
void group_norm_blocked(const float* src, float* dst, const BlockedShape& s, int groups, float epsilon,
                        const std::vector<float>& gamma, const std::vector<float>& beta, const Activation& act) {
  const std::int64_t lanes = B > 0 ? B : s.block;
  const std::int64_t cb = s.channel_blocks();
  const std::int64_t pixels = s.h * s.w;
  const std::int64_t padded_c = cb * lanes;
  // Per-channel sums in double: each channel is summed by one thread, pixel by pixel.
  std::vector<double> sum(static_cast<std::size_t>(s.n * padded_c), 0.0);
  std::vector<double> sumsq(sum.size(), 0.0);
#pragma omp parallel for schedule(static)
  for (std::int64_t p = 0; p < s.n * cb; ++p) {
    const float* x = src + p * pixels * lanes;
    double* acc = sum.data() + p * lanes;
    double* acc2 = sumsq.data() + p * lanes;
    for (std::int64_t i = 0; i < pixels; ++i) {
      for (std::int64_t lane = 0; lane < lanes; ++lane) {
        const double v = x[i * lanes + lane];
        acc[lane] += v;
        acc2[lane] += v * v;
      }
    }
  }
  // Per-channel scale and shift for each image: a[c] x + b[c].
  const std::int64_t per_group = s.c / groups;
  std::vector<float> scale(static_cast<std::size_t>(s.n * padded_c), 0.0f);
  std::vector<float> shift(scale.size(), 0.0f);
  for (std::int64_t n = 0; n < s.n; ++n) {
    for (int g = 0; g < groups; ++g) {
      double total = 0.0, total2 = 0.0;
      for (std::int64_t c = g * per_group; c < (g + 1) * per_group; ++c) {
        total += sum[static_cast<std::size_t>(n * padded_c + c)];
        total2 += sumsq[static_cast<std::size_t>(n * padded_c + c)];
      }
      const double count = static_cast<double>(per_group * pixels);
      const double mean = total / count;
      const double var = std::max(0.0, total2 / count - mean * mean);
      const double inv = 1.0 / std::sqrt(var + static_cast<double>(epsilon));
      for (std::int64_t c = g * per_group; c < (g + 1) * per_group; ++c) {
        const auto k = static_cast<std::size_t>(n * padded_c + c);
        scale[k] = static_cast<float>(inv * gamma[static_cast<std::size_t>(c)]);
        shift[k] = static_cast<float>(beta[static_cast<std::size_t>(c)] - mean * inv * gamma[static_cast<std::size_t>(c)]);
      }
    }
  }
  const float lo = act.kind == Activation::Kind::Clip ? act.alpha : -INFINITY;
  const float hi = act.kind == Activation::Kind::Clip ? act.beta : INFINITY;
  const std::int64_t rows = s.n * cb * s.h;
#pragma omp parallel for schedule(static)
  for (std::int64_t r = 0; r < rows; ++r) {
    const std::int64_t p = r / s.h;
    const float* a = scale.data() + p * lanes;
    const float* b = shift.data() + p * lanes;
    const float* x = src + r * s.w * lanes;
    float* y = dst + r * s.w * lanes;
    for (std::int64_t i = 0; i < s.w; ++i) {
      for (std::int64_t lane = 0; lane < lanes; ++lane) {
        float v = a[lane] * x[i * lanes + lane] + b[lane];
        switch (act.kind) {
          case Activation::Kind::None:
            break;
          case Activation::Kind::Relu:
            v = v > 0.0f ? v : 0.0f;
            break;
          case Activation::Kind::LeakyRelu:
            v = v > 0.0f ? v : act.alpha * v;
            break;
          case Activation::Kind::Clip:
            v = std::min(std::max(v, lo), hi);
            break;
        }
        y[i * lanes + lane] = v;
      }
    }
  }
}

}  // namespace

template <bool Accumulate>
void resize_any_block(const float* src, const BlockedShape& in, float* dst, std::int64_t out_h, std::int64_t out_w,
                      const AxisTaps& ty, const AxisTaps& tx) {
  switch (in.block) {
    case 1:
      resize_rows<1, Accumulate>(src, in, dst, out_h, out_w, ty, tx);
      break;
    case 8:
      resize_rows<8, Accumulate>(src, in, dst, out_h, out_w, ty, tx);
      break;
    case 16:
      resize_rows<16, Accumulate>(src, in, dst, out_h, out_w, ty, tx);
      break;
    default:
      resize_rows<0, Accumulate>(src, in, dst, out_h, out_w, ty, tx);
      break;
  }
}

void resize(const float* src, const BlockedShape& in, float* dst, std::int64_t out_h, std::int64_t out_w,
            const ResizeParams& params, bool accumulate) {
  const AxisTaps ty = axis_taps(in.h, out_h, params.scale_h, params);
  const AxisTaps tx = axis_taps(in.w, out_w, params.scale_w, params);
  if (accumulate) {
    resize_any_block<true>(src, in, dst, out_h, out_w, ty, tx);
  } else {
    resize_any_block<false>(src, in, dst, out_h, out_w, ty, tx);
  }
}

void group_norm(const float* src, float* dst, const BlockedShape& shape, int groups, float epsilon,
                const std::vector<float>& gamma, const std::vector<float>& beta, const Activation& activation) {
  switch (shape.block) {
    case 1:
      group_norm_blocked<1>(src, dst, shape, groups, epsilon, gamma, beta, activation);
      break;
    case 8:
      group_norm_blocked<8>(src, dst, shape, groups, epsilon, gamma, beta, activation);
      break;
    case 16:
      group_norm_blocked<16>(src, dst, shape, groups, epsilon, gamma, beta, activation);
      break;
    default:
      group_norm_blocked<0>(src, dst, shape, groups, epsilon, gamma, beta, activation);
      break;
  }
}

}  // namespace nimbus::kernels
