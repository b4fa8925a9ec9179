#include <algorithm>
#include <cfloat>
#include <cmath>
#include <map>
#include <set>

#include <fmt/format.h>

#include "nimbus/core/error.h"
#include "nimbus/inference/backend.h"
#include "nimbus/inference/onednn_ir.h"

namespace nimbus::onednn {
namespace {
// Graph rewrites on the IR: fold affine ops into convolutions, recognise
// torch's GroupNorm and stack+sum exports, fuse activations and residual sums.

class Fuser {
 public:
  explicit Fuser(IrGraph& g) : g_(g) {}

  void run() {
    group_norm_pattern();
    stack_sum_pattern();
    split_concats_into_convs();
    drop_identity_scalings();
    fold_input_scaling_into_convs();
    fold_affine_into_consumers();
    bool changed = true;
    while (changed) {
      changed = false;
      changed |= merge_affines();
      changed |= fold_affine_into_producer();
      changed |= fuse_residual_sums();
      changed |= fuse_activations();
    }
    // What stays a ChannelAffine becomes a depthwise 1x1 convolution (4-D) so
    // oneDNN runs it with post-ops.
    for (IrOp& op : g_.ops) {
      if (op.dead || op.kind != OpKind::ChannelAffine) continue;
      if (dims(op.in[0]).size() != 4) throw UnsupportedModelError(op.what + ": per-channel scaling of a non-4-D tensor");
      const auto c = static_cast<std::int64_t>(op.scale.size());
      op.kind = OpKind::Conv;
      op.weights = Tensor::floats(op.scale, {c, 1, 1, 1});
      op.bias = op.shift;
      op.group = c;
      op.kernel = {1, 1};
      op.strides = op.dilations = {1, 1};
      op.pad_l = op.pad_r = {0, 0};
    }
  }

 private:
  // By value: adding tensors may move the vector under a reference.
  Dims dims(int t) const { return g_.tensors[static_cast<std::size_t>(t)].dims; }

  // Live ops reading tensor t (as input or as a sum post-op operand).
  std::vector<int> consumers(int t) const {
    std::vector<int> out;
    for (int k = 0; k < static_cast<int>(g_.ops.size()); ++k) {
      const IrOp& op = g_.ops[static_cast<std::size_t>(k)];
      if (op.dead) continue;
      if (std::find(op.in.begin(), op.in.end(), t) != op.in.end() || op.sum_input == t) out.push_back(k);
    }
    return out;
  }
  // The single consumer of t, or -1 (also -1 when t is the graph output).
  int sole_consumer(int t) const {
    if (t == g_.output) return -1;
    const auto c = consumers(t);
    return c.size() == 1 ? c[0] : -1;
  }
  IrOp* producer_op(int t) {
    const int p = g_.tensors[static_cast<std::size_t>(t)].producer;
    return p < 0 || g_.ops[static_cast<std::size_t>(p)].dead ? nullptr : &g_.ops[static_cast<std::size_t>(p)];
  }
  // Replaces reads of `from` by `to` everywhere (and the graph output).
  void rewire(int from, int to) {
    for (IrOp& op : g_.ops) {
      for (int& t : op.in)
        if (t == from) t = to;
      if (op.sum_input == from) op.sum_input = to;
    }
    if (g_.output == from) g_.output = to;
  }

  // Reshape(x -> [N, G, L]) -> InstanceNorm(G) -> Reshape(-> x's dims) [-> affine] becomes GroupNorm(x).
  void group_norm_pattern() {
    for (IrOp& first : g_.ops) {
      if (first.dead || first.kind != OpKind::Reshape) continue;
      const Dims& x = dims(first.in[0]);
      const Dims& grouped = dims(first.out);
      if (x.size() != 4 || grouped.size() != 3 || grouped[0] != x[0]) continue;
      const int norm_idx = sole_consumer(first.out);
      if (norm_idx < 0) continue;
      IrOp& norm = g_.ops[static_cast<std::size_t>(norm_idx)];
      if (norm.kind != OpKind::GroupNorm || norm.groups != grouped[1]) continue;
      const int back_idx = sole_consumer(norm.out);
      if (back_idx < 0) continue;
      IrOp& back = g_.ops[static_cast<std::size_t>(back_idx)];
      if (back.kind != OpKind::Reshape || dims(back.out) != x) continue;
      const std::int64_t groups = grouped[1];
      if (x[1] % groups != 0) continue;
      const std::int64_t per_group = x[1] / groups;
      IrOp gn;
      gn.kind = OpKind::GroupNorm;
      gn.what = norm.what;
      gn.in = {first.in[0]};
      gn.out = back.out;
      gn.groups = groups;
      gn.epsilon = norm.epsilon;
      for (std::int64_t c = 0; c < x[1]; ++c) {
        gn.scale.push_back(norm.scale[static_cast<std::size_t>(c / per_group)]);
        gn.shift.push_back(norm.shift[static_cast<std::size_t>(c / per_group)]);
      }
      first.dead = norm.dead = true;
      back = std::move(gn);
      g_.tensors[static_cast<std::size_t>(back.out)].producer = back_idx;
    }
  }

  // ReduceSum(axis k, keepdims 0) of Concat(axis k) of Unsqueeze(axis k) of equal-shaped x_i becomes Sum(x_i).
  void stack_sum_pattern() {
    for (IrOp& red : g_.ops) {
      if (red.dead || red.kind != OpKind::Reduce || red.alg != algorithm::reduction_sum || red.flag) continue;
      IrOp* cat = producer_op(red.in[0]);
      if (!cat || cat->kind != OpKind::Concat || sole_consumer(cat->out) < 0) continue;
      const Dims& stacked = dims(cat->out);
      int reduced_axis = -1, count = 0;
      for (std::size_t k = 0; k < red.ints.size(); ++k) {
        if (red.ints[k] == 1 && stacked[k] != 1) reduced_axis = static_cast<int>(k), ++count;
      }
      if (count != 1 || reduced_axis != cat->axis) continue;
      std::vector<int> sources;
      for (int part : cat->in) {
        IrOp* unsq = producer_op(part);
        if (!unsq || unsq->kind != OpKind::Reshape || sole_consumer(part) < 0) break;
        Dims expected = dims(unsq->in[0]);
        expected.insert(expected.begin() + reduced_axis, 1);
        if (dims(part) != expected) break;
        sources.push_back(unsq->in[0]);
      }
      if (sources.size() != cat->in.size()) continue;
      for (int part : cat->in) producer_op(part)->dead = true;
      cat->dead = true;
      red.kind = OpKind::Sum;
      red.in = sources;
      red.sum_scales.assign(sources.size(), 1.0f);
    }
  }

  // Inserts `op` to run before ops[pos] and renumbers producers.
  int insert_op(std::size_t pos, IrOp op, Dims out_dims) {
    op.out = g_.add_tensor(std::move(out_dims));
    const int out = op.out;
    g_.ops.insert(g_.ops.begin() + static_cast<std::ptrdiff_t>(pos), std::move(op));
    for (std::size_t k = 0; k < g_.ops.size(); ++k) {
      if (!g_.ops[k].dead) g_.tensors[static_cast<std::size_t>(g_.ops[k].out)].producer = static_cast<int>(k);
    }
    return out;
  }

  // Conv(Concat(a, b, ...) along channels) = Conv_a(a) + Conv_b(b) + ...: each part's
  // convolution accumulates into the previous one's output (a sum post-op), so the
  // concatenated tensor is never built.
  void split_concats_into_convs() {
    for (std::size_t k = 0; k < g_.ops.size(); ++k) {
      if (g_.ops[k].dead || g_.ops[k].kind != OpKind::Concat || g_.ops[k].axis != 1) continue;
      const int cat_out = g_.ops[k].out;
      if (cat_out == g_.output || dims(cat_out).size() != 4) continue;
      const std::vector<int> users = consumers(cat_out);
      bool ok = !users.empty();
      for (int u : users) {
        const IrOp& c = g_.ops[static_cast<std::size_t>(u)];
        ok = ok && c.kind == OpKind::Conv && c.group == 1 && c.in[0] == cat_out && c.sum_input < 0 && c.post.empty();
      }
      if (!ok) continue;
      const std::vector<int> parts = g_.ops[k].in;
      g_.ops[k].dead = true;
      // Each consumer becomes a chain; later insertions shift indices, so go from the last one.
      for (auto it = users.rbegin(); it != users.rend(); ++it) {
        const auto conv_idx = static_cast<std::size_t>(*it);
        const IrOp original = g_.ops[conv_idx];
        const Dims& w = original.weights.dims;  // [oc, ic, kh, kw]
        const std::int64_t per_in = w[2] * w[3];
        std::int64_t offset = 0;
        int partial = -1;
        std::size_t pos = conv_idx;
        for (std::size_t p = 0; p < parts.size(); ++p) {
          const std::int64_t channels = dims(parts[p])[1];
          IrOp piece = original;
          piece.in = {parts[p]};
          piece.weights = Tensor::floats({}, {w[0], channels, w[2], w[3]});
          for (std::int64_t o = 0; o < w[0]; ++o) {
            const auto* src = original.weights.f.data() + (o * w[1] + offset) * per_in;
            piece.weights.f.insert(piece.weights.f.end(), src, src + channels * per_in);
          }
          if (p > 0) {
            std::fill(piece.bias.begin(), piece.bias.end(), 0.0f);
            piece.sum_input = partial;
            piece.post = {PostOp{true, algorithm::eltwise_relu, 0.0f, 0.0f}};
          }
          offset += channels;
          if (p + 1 == parts.size()) {
            piece.out = original.out;
            g_.ops[pos] = std::move(piece);
          } else {
            partial = insert_op(pos, std::move(piece), dims(original.out));
            ++pos;
          }
        }
      }
    }
  }

  // ChannelAffine read only by unpadded convolutions: conv(a x + b) = conv'(x) + c,
  // with the input channels' weights scaled by a and b folded into the bias.
  void fold_affine_into_consumers() {
    for (IrOp& op : g_.ops) {
      if (op.dead || op.kind != OpKind::ChannelAffine || op.out == g_.output) continue;
      const std::vector<int> users = consumers(op.out);
      bool ok = !users.empty();
      for (int u : users) {
        const IrOp& c = g_.ops[static_cast<std::size_t>(u)];
        const bool unpadded = std::all_of(c.pad_l.begin(), c.pad_l.end(), [](auto v) { return v == 0; }) &&
                              std::all_of(c.pad_r.begin(), c.pad_r.end(), [](auto v) { return v == 0; });
        ok = ok && c.kind == OpKind::Conv && c.group == 1 && c.in[0] == op.out && c.sum_input != op.out && unpadded;
      }
      if (!ok) continue;
      for (int u : users) {
        IrOp& c = g_.ops[static_cast<std::size_t>(u)];
        const Dims& w = c.weights.dims;
        const std::int64_t per_in = w[2] * w[3];
        for (std::int64_t o = 0; o < w[0]; ++o) {
          double extra = 0.0;
          for (std::int64_t i = 0; i < w[1]; ++i) {
            for (std::int64_t t = 0; t < per_in; ++t) {
              float& v = c.weights.f[static_cast<std::size_t>((o * w[1] + i) * per_in + t)];
              extra += static_cast<double>(v) * op.shift[static_cast<std::size_t>(i)];
              v *= op.scale[static_cast<std::size_t>(i)];
            }
          }
          c.bias[static_cast<std::size_t>(o)] += static_cast<float>(extra);
        }
      }
      op.dead = true;
      rewire(op.out, op.in[0]);
    }
  }

  // x * 1 (torch exports `x * input_scale` even when the scale is 1).
  void drop_identity_scalings() {
    for (IrOp& op : g_.ops) {
      if (op.dead || op.kind != OpKind::Eltwise || op.alg != algorithm::eltwise_linear || op.alpha != 1.0f ||
          op.beta != 0.0f) {
        continue;
      }
      op.dead = true;
      rewire(op.out, op.in[0]);
    }
  }

  // y = s * x read only by convolutions (directly or through channel slices): a
  // convolution is linear and zero padding stays zero, so s moves into their weights.
  void fold_input_scaling_into_convs() {
    for (IrOp& op : g_.ops) {
      if (op.dead || op.kind != OpKind::Eltwise || op.alg != algorithm::eltwise_linear || op.beta != 0.0f) continue;
      if (op.out == g_.output) continue;
      std::vector<int> convs, slices;
      bool foldable = true;
      for (int c : consumers(op.out)) {
        const IrOp& user = g_.ops[static_cast<std::size_t>(c)];
        if (user.kind == OpKind::Conv && user.in[0] == op.out && user.sum_input != op.out) {
          convs.push_back(c);
        } else if (user.kind == OpKind::Slice && user.out != g_.output) {
          slices.push_back(c);
          for (int sc : consumers(user.out)) {
            const IrOp& next = g_.ops[static_cast<std::size_t>(sc)];
            if (next.kind == OpKind::Conv && next.in[0] == user.out && next.sum_input != user.out) {
              convs.push_back(sc);
            } else {
              foldable = false;
            }
          }
        } else {
          foldable = false;
        }
      }
      if (!foldable || convs.empty()) continue;
      for (int c : convs) {
        for (float& w : g_.ops[static_cast<std::size_t>(c)].weights.f) w *= op.alpha;
      }
      op.dead = true;
      rewire(op.out, op.in[0]);
    }
  }

  bool merge_affines() {
    bool changed = false;
    for (IrOp& op : g_.ops) {
      if (op.dead || op.kind != OpKind::ChannelAffine) continue;
      IrOp* prev = producer_op(op.in[0]);
      if (!prev || sole_consumer(op.in[0]) < 0) continue;
      if (prev->kind == OpKind::ChannelAffine) {
        for (std::size_t c = 0; c < op.scale.size(); ++c) {
          prev->shift[c] = prev->shift[c] * op.scale[c] + op.shift[c];
          prev->scale[c] *= op.scale[c];
        }
      } else if (prev->kind == OpKind::GroupNorm && prev->activation.kind == kernels::Activation::Kind::None &&
                 prev->scale.size() == op.scale.size()) {
        for (std::size_t c = 0; c < op.scale.size(); ++c) {
          prev->shift[c] = prev->shift[c] * op.scale[c] + op.shift[c];
          prev->scale[c] *= op.scale[c];
        }
      } else {
        continue;
      }
      op.dead = true;
      rewire(op.out, prev->out);
      changed = true;
    }
    return changed;
  }

  // Conv -> ChannelAffine: scale the output channels' weights and bias.
  bool fold_affine_into_producer() {
    bool changed = false;
    for (IrOp& op : g_.ops) {
      if (op.dead || op.kind != OpKind::ChannelAffine) continue;
      IrOp* conv = producer_op(op.in[0]);
      if (!conv || (conv->kind != OpKind::Conv && conv->kind != OpKind::Deconv) || !conv->post.empty() ||
          sole_consumer(op.in[0]) < 0) {
        continue;
      }
      const std::size_t oc = conv->bias.size();
      if (op.scale.size() != oc) continue;
      auto& w = conv->weights.f;
      if (conv->kind == OpKind::Conv) {
        const std::size_t per_oc = w.size() / oc;
        for (std::size_t c = 0; c < oc; ++c) {
          for (std::size_t k = 0; k < per_oc; ++k) w[c * per_oc + k] *= op.scale[c];
        }
      } else {
        // ConvTranspose weights are [C_in, C_out/group, kh, kw].
        const std::size_t per_group_oc = static_cast<std::size_t>(conv->weights.dims[1]);
        const std::size_t spatial = static_cast<std::size_t>(conv->weights.dims[2] * conv->weights.dims[3]);
        const std::size_t ic = static_cast<std::size_t>(conv->weights.dims[0]);
        const std::size_t ic_per_group = ic / static_cast<std::size_t>(conv->group);
        for (std::size_t i = 0; i < ic; ++i) {
          const std::size_t g = i / ic_per_group;
          for (std::size_t o = 0; o < per_group_oc; ++o) {
            for (std::size_t s = 0; s < spatial; ++s) w[(i * per_group_oc + o) * spatial + s] *= op.scale[g * per_group_oc + o];
          }
        }
      }
      for (std::size_t c = 0; c < oc; ++c) conv->bias[c] = conv->bias[c] * op.scale[c] + op.shift[c];
      op.dead = true;
      rewire(op.out, conv->out);
      changed = true;
    }
    return changed;
  }

  // Add(conv(x), y) -> conv(x) with a sum post-op accumulating into y's buffer;
  // Add(resize(x), y) -> resize(x) accumulating into y's buffer. The producer
  // moves to the Add's place, where y exists.
  bool fuse_residual_sums() {
    bool changed = false;
    for (std::size_t k = 0; k < g_.ops.size(); ++k) {
      IrOp& add = g_.ops[k];
      if (add.dead || add.kind != OpKind::Binary || add.alg != algorithm::binary_add || add.constant ||
          !add.post.empty() || dims(add.in[0]) != dims(add.in[1])) {
        continue;
      }
      for (int side = 0; side < 2; ++side) {
        const int conv_out = add.in[static_cast<std::size_t>(side)];
        const int other = add.in[static_cast<std::size_t>(1 - side)];
        IrOp* conv = producer_op(conv_out);
        if (!conv || (conv->kind != OpKind::Conv && conv->kind != OpKind::Deconv && conv->kind != OpKind::Resize) ||
            conv->sum_input >= 0 || sole_consumer(conv_out) != static_cast<int>(k) || other == conv_out) {
          continue;
        }
        const int conv_idx = g_.tensors[static_cast<std::size_t>(conv_out)].producer;
        IrOp moved = std::move(*conv);
        g_.ops[static_cast<std::size_t>(conv_idx)].dead = true;
        moved.post.push_back(PostOp{true, algorithm::eltwise_relu, 0.0f, 0.0f});
        moved.sum_input = other;
        moved.out = add.out;
        moved.dead = false;
        add = std::move(moved);
        g_.tensors[static_cast<std::size_t>(add.out)].producer = static_cast<int>(k);
        changed = true;
        break;
      }
    }
    return changed;
  }

  bool fuse_activations() {
    bool changed = false;
    for (IrOp& act : g_.ops) {
      if (act.dead || act.kind != OpKind::Eltwise) continue;
      IrOp* prev = producer_op(act.in[0]);
      if (!prev || sole_consumer(act.in[0]) < 0) continue;
      if (prev->kind == OpKind::Conv || prev->kind == OpKind::Deconv || prev->kind == OpKind::Binary) {
        prev->post.push_back(PostOp{false, act.alg, act.alpha, act.beta});
      } else if (prev->kind == OpKind::GroupNorm && prev->activation.kind == kernels::Activation::Kind::None &&
                 (act.alg == algorithm::eltwise_relu || act.alg == algorithm::eltwise_clip_v2)) {
        if (act.alg == algorithm::eltwise_relu) {
          prev->activation.kind = act.alpha == 0.0f ? kernels::Activation::Kind::Relu
                                                    : kernels::Activation::Kind::LeakyRelu;
          prev->activation.alpha = act.alpha;
        } else {
          prev->activation = {kernels::Activation::Kind::Clip, act.alpha, act.beta};
        }
      } else {
        continue;
      }
      act.dead = true;
      rewire(act.out, prev->out);
      changed = true;
    }
    return changed;
  }

  IrGraph& g_;
};

}  // namespace

void fuse(IrGraph& graph) { Fuser(graph).run(); }

}  // namespace nimbus::onednn
