#include "nimbus/inference/onednn_plan.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <set>
#include <unordered_map>

#include <fmt/format.h>

#include "nimbus/core/error.h"
#include "nimbus/inference/blocked_kernels.h"

namespace nimbus::onednn {
namespace {

using dnnl::memory;
using Tag = memory::format_tag;

// Plan: the IR lowered to oneDNN primitives and blocked kernels, with a
// buffer assignment computed from tensor lifetimes.

memory::dims to_dnnl(const Dims& d) { return memory::dims(d.begin(), d.end()); }

memory::desc plain_desc(const Dims& d) {
  memory::dims strides(d.size(), 1);
  for (int k = static_cast<int>(d.size()) - 2; k >= 0; --k) {
    strides[static_cast<std::size_t>(k)] = strides[static_cast<std::size_t>(k) + 1] * std::max<std::int64_t>(d[k + 1], 1);
  }
  return memory::desc(to_dnnl(d), memory::data_type::f32, strides);
}

// The block of a layout the blocked kernels read: 1 (NCHW), 8 or 16 (nChw8c,
// nChw16c), C (NHWC: one block of all channels); 0 for any other layout.
int channel_block(const memory::desc& md) {
  const memory::dims d = md.dims();
  if (d.size() != 4) return 0;
  const auto f32 = memory::data_type::f32;
  if (md == memory::desc(d, f32, Tag::nchw)) return 1;
  if (md == memory::desc(d, f32, Tag::nChw8c)) return 8;
  if (md == memory::desc(d, f32, Tag::nChw16c)) return 16;
  if (md == memory::desc(d, f32, Tag::nhwc)) return static_cast<int>(d[1]);
  return 0;
}

// nChw16c on CPUs with AVX-512, nChw8c otherwise: the layout oneDNN's direct and
// Winograd kernels read without reorders.
int preferred_block() {
  static const int block = [] {
    const dnnl::cpu_isa isa = dnnl::get_effective_cpu_isa();
    return (isa == dnnl::cpu_isa::avx512_core || isa == dnnl::cpu_isa::avx512_core_vnni ||
            isa == dnnl::cpu_isa::avx512_core_bf16 || isa == dnnl::cpu_isa::avx512_core_amx ||
            isa == dnnl::cpu_isa::avx512_mic || isa == dnnl::cpu_isa::avx512_mic_4ops)
               ? 16
               : 8;
  }();
  return block;
}

memory::desc blocked_md(const Dims& d, int block) {
  return memory::desc(to_dnnl(d), memory::data_type::f32, block == 16 ? Tag::nChw16c : Tag::nChw8c);
}

// `like`'s layout (one the blocked kernels read) for a tensor of dims `d`.
memory::desc kernel_layout(const memory::desc& like, const Dims& d) {
  const memory::dims ld = like.dims();
  const auto f32 = memory::data_type::f32;
  if (ld.size() == 4 && d.size() == 4) {
    if (like == memory::desc(ld, f32, Tag::nChw8c)) return memory::desc(to_dnnl(d), f32, Tag::nChw8c);
    if (like == memory::desc(ld, f32, Tag::nChw16c)) return memory::desc(to_dnnl(d), f32, Tag::nChw16c);
    if (like == memory::desc(ld, f32, Tag::nhwc)) return memory::desc(to_dnnl(d), f32, Tag::nhwc);
  }
  return plain_desc(d);
}

// The layout of `like` for other dims when it is a known dense layout; plain otherwise.
memory::desc same_layout(const memory::desc& like, const Dims& d) { return kernel_layout(like, d); }

class Lowering {
 public:
  Lowering(const IrGraph& g, Plan& plan) : g_(g), plan_(plan) {}

  void run() {
    compute_last_uses();
    plan_.input_dims = g_.tensors[static_cast<std::size_t>(g_.input)].dims;
    plan_.input = add_tensor(plain_desc(plan_.input_dims));
    ir_to_plan_[g_.input] = plan_.input;
    for (std::size_t k = 0; k < g_.ops.size(); ++k) {
      const IrOp& op = g_.ops[k];
      if (op.dead) continue;
      current_ = static_cast<int>(k);
      lower(op);
    }
    plan_.output_dims = g_.tensors[static_cast<std::size_t>(g_.output)].dims;
    const int result = ir_to_plan_.at(g_.output);
    plan_.output = add_tensor(plain_desc(plan_.output_dims));
    add_reorder(result, plan_.output, "output reorder");
    assign_buffers();
  }

 private:
  const Dims& dims(int ir) const { return g_.tensors[static_cast<std::size_t>(ir)].dims; }

  void compute_last_uses() {
    last_use_.assign(g_.tensors.size(), -1);
    for (std::size_t k = 0; k < g_.ops.size(); ++k) {
      const IrOp& op = g_.ops[k];
      if (op.dead) continue;
      for (int t : op.in) consumers_[t].push_back(static_cast<int>(k));
      if (op.sum_input >= 0) consumers_[op.sum_input].push_back(static_cast<int>(k));
      for (int t : op.in) last_use_[static_cast<std::size_t>(t)] = static_cast<int>(k);
      if (op.sum_input >= 0) last_use_[static_cast<std::size_t>(op.sum_input)] = static_cast<int>(k);
    }
    last_use_[static_cast<std::size_t>(g_.output)] = static_cast<int>(g_.ops.size());
  }

  // May the op being lowered overwrite IR tensor t (it is read here for the last time)?
  bool consumable(int ir) const {
    return ir != g_.input && ir != g_.output && last_use_[static_cast<std::size_t>(ir)] == current_;
  }

  // A tensor with its own buffer, or (base >= 0) one that takes over `base`'s buffer
  // because base is dead from here on (in-place ops).
  int add_tensor(const memory::desc& md, int base = -1) {
    plan_.tensors.push_back({md, base, false});
    return static_cast<int>(plan_.tensors.size()) - 1;
  }
  // A view of `base`'s data under another shape or window; both may stay alive.
  int add_view(const memory::desc& md, int base) {
    plan_.tensors.push_back({md, base, true});
    viewed_roots_.insert(root(base));
    return static_cast<int>(plan_.tensors.size()) - 1;
  }
  // May an op write into plan tensor t (holding IR tensor `ir`) in place?
  bool writable(int ir, int t) const {
    if (!consumable(ir) || viewed_roots_.count(root(t))) return false;
    for (int k = t; k >= 0; k = plan_.tensors[static_cast<std::size_t>(k)].base) {
      if (plan_.tensors[static_cast<std::size_t>(k)].view) return false;
    }
    return true;
  }
  int root(int t) const {
    while (plan_.tensors[static_cast<std::size_t>(t)].base >= 0) t = plan_.tensors[static_cast<std::size_t>(t)].base;
    return t;
  }
  // By value: adding tensors may move the vector under a reference.
  memory::desc md(int t) const { return plan_.tensors[static_cast<std::size_t>(t)].md; }

  int add_constant(const memory::desc& md, const float* values) {
    memory m(md, plan_.engine);
    std::memcpy(m.get_data_handle(), values, md.get_size());
    plan_.constants.push_back(m);
    plan_.weight_bytes += md.get_size();
    return static_cast<int>(plan_.constants.size()) - 1;
  }
  // A constant in the layout a primitive asked for, from plain values in `user` layout.
  int add_constant_as(const memory::desc& wanted, const memory::desc& user, const float* values) {
    if (wanted == user) return add_constant(wanted, values);
    memory src(user, plan_.engine, const_cast<float*>(values));
    memory dst(wanted, plan_.engine);
    dnnl::stream s(plan_.engine);
    dnnl::reorder(src, dst).execute(s, src, dst);
    s.wait();
    plan_.constants.push_back(dst);
    plan_.weight_bytes += wanted.get_size();
    return static_cast<int>(plan_.constants.size()) - 1;
  }

  void add_step(Step step) {
    std::string impl;
    if (step.prim) {
      const_dnnl_primitive_desc_t pd = nullptr;
      dnnl_primitive_get_primitive_desc(step.prim.get(), &pd);
      const char* info = nullptr;
      if (pd && dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &info) == dnnl_success && info) impl = info;
    }
    step.what = fmt::format("{} [{}] ({})", step.what, impl.empty() ? "nimbus" : impl,
                            g_.ops[static_cast<std::size_t>(std::max(current_, 0))].what);
    plan_.steps.push_back(std::move(step));
  }

  void add_reorder(int from, int to, const char* what) {
    Step s;
    s.what = what;
    s.prim = dnnl::reorder(dnnl::reorder::primitive_desc(plan_.engine, md(from), plan_.engine, md(to)));
    s.tensor_args = {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}};
    plan_.steps.push_back(std::move(s));
  }

  // The plan tensor holding IR tensor `ir` in layout `wanted` (reordering once, cached).
  int get_as(int ir, const memory::desc& wanted) {
    const int t = ir_to_plan_.at(ir);
    if (md(t) == wanted) return t;
    auto key = std::make_pair(ir, wanted);
    for (const auto& [k, v] : converted_) {
      if (k.first == ir && k.second == wanted) return v;
    }
    const int c = add_tensor(wanted);
    add_reorder(t, c, "reorder");
    converted_.emplace_back(key, c);
    return c;
  }
  int get_plain(int ir) { return get_as(ir, plain_desc(dims(ir))); }

  dnnl::primitive_attr attr_with(const std::vector<PostOp>& post) const {
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    if (!post.empty()) {
      dnnl::post_ops po;
      for (const PostOp& p : post) {
        if (p.is_sum) {
          po.append_sum(1.0f);
        } else {
          po.append_eltwise(1.0f, p.alg, p.alpha, p.beta);
        }
      }
      attr.set_post_ops(po);
    }
    return attr;
  }
  static dnnl::primitive_attr plain_attr() {
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    return attr;
  }
  void note_scratchpad(const memory::desc& md) { plan_.scratchpad_bytes = std::max(plan_.scratchpad_bytes, md.get_size()); }

  // Output tensor of an op that may write into `ir`'s buffer in place.
  int output_in_place_of(int ir, const memory::desc& out_md) {
    const int t = ir_to_plan_.at(ir);
    if (writable(ir, t) && md(t) == out_md) return add_tensor(out_md, t);
    return add_tensor(out_md);
  }

  // The output of an op that accumulates into op.sum_input when it has one: y's
  // buffer itself when y dies here, else a copy of y; a fresh tensor otherwise.
  int output_for(const IrOp& op, const memory::desc& dst_md) {
    if (op.sum_input < 0) return add_tensor(dst_md);
    const int y = get_as(op.sum_input, dst_md);
    if (writable(op.sum_input, y)) return add_tensor(dst_md, y);
    const int dst = add_tensor(dst_md);
    add_reorder(y, dst, "copy of an accumulated operand");
    return dst;
  }

  void lower(const IrOp& op) {
    switch (op.kind) {
      case OpKind::Conv:
      case OpKind::Deconv:
        return conv(op);
      case OpKind::Pool:
        return pool(op);
      case OpKind::Eltwise:
        return eltwise(op);
      case OpKind::Binary:
        return binary(op);
      case OpKind::Sum:
        return sum(op);
      case OpKind::Concat:
        return concat(op);
      case OpKind::Slice:
        return slice(op);
      case OpKind::Resize:
        return resize(op);
      case OpKind::GroupNorm:
        return group_norm(op);
      case OpKind::Reshape:
        return reshape(op);
      case OpKind::Transpose:
        return transpose(op);
      case OpKind::Softmax:
        return softmax(op);
      case OpKind::Reduce:
        return reduce(op);
      case OpKind::MatMul:
        return matmul(op);
      case OpKind::Pad:
        return pad(op);
      case OpKind::ChannelAffine:
        break;
    }
    throw InternalError("oneDNN lowering: unexpected op kind for " + op.what);
  }

  static bool is_reference(const dnnl::primitive_desc_base& pd) {
    return std::string(pd.impl_info_str()).rfind("ref", 0) == 0;
  }

  void conv(const IrOp& op) {
    const Dims& x = dims(op.in[0]);
    const Dims& out = dims(op.out);
    const Dims& w = op.weights.dims;
    const bool deconv = op.kind == OpKind::Deconv;
    const std::int64_t g = op.group;
    const std::int64_t oc = out[1], ic = x[1];
    memory::dims wdims;
    Tag user_tag;
    if (!deconv) {
      wdims = g > 1 ? memory::dims{g, oc / g, ic / g, w[2], w[3]} : memory::dims{oc, ic, w[2], w[3]};
      user_tag = g > 1 ? Tag::goihw : Tag::oihw;
    } else {
      wdims = g > 1 ? memory::dims{g, oc / g, ic / g, w[2], w[3]} : memory::dims{oc, ic, w[2], w[3]};
      user_tag = g > 1 ? Tag::giohw : Tag::iohw;
    }
    const auto f32 = memory::data_type::f32;
    const memory::desc src_any(to_dnnl(x), f32, Tag::any), dst_any(to_dnnl(out), f32, Tag::any);
    const memory::desc wei_any(wdims, f32, Tag::any), bias_md({oc}, f32, Tag::x);
    const memory::dims strides = to_dnnl(op.strides), pad_l = to_dnnl(op.pad_l), pad_r = to_dnnl(op.pad_r);
    memory::dims dil = to_dnnl(op.dilations);
    for (auto& d : dil) d -= 1;  // oneDNN counts dilation from 0
    const dnnl::primitive_attr attr = attr_with(op.post);
    dnnl::primitive prim;
    memory::desc src_md, wei_md, dst_md, scratch;
    if (!deconv) {
      // A few (<= 4) input channels in plain layout: oneDNN's first-layer kernels read them
      // as they are, which is faster than reordering them into a blocked layout first.
      const memory::desc& current = md(ir_to_plan_.at(op.in[0]));
      const bool plain_small = ic <= 4 && g == 1 && current == plain_desc(x);
      const auto make_pd = [&](const memory::desc& src, const memory::desc& dst) {
        return dnnl::convolution_forward::primitive_desc(
            dnnl::convolution_forward::desc(dnnl::prop_kind::forward_inference, algorithm::convolution_direct, src,
                                            wei_any, bias_md, dst, strides, dil, pad_l, pad_r),
            attr, plan_.engine);
      };
      // One blocked activation layout through the network (nChw16c with AVX-512, nChw8c
      // with AVX2) keeps reorders out of it; convolutions with other channel counts choose.
      const int block = preferred_block();
      const bool blocked = ic % block == 0 && oc % block == 0 && ic >= 32 && oc >= 32;
      const memory::desc src_pref = blocked ? blocked_md(x, block) : src_any;
      const memory::desc dst_pref = blocked ? blocked_md(out, block) : dst_any;
      dnnl::convolution_forward::primitive_desc pd;
      // 3x3 stride-1 convolutions with wide channels run as Winograd F(2x2 or 4x4, 3x3) where
      // oneDNN has it (AVX-512): 2-4x fewer multiplies, accuracy within fp32 noise of direct
      // convolution (the engine tests compare against torch).
      // NIMBUS_ONEDNN_WINOGRAD=0 keeps every convolution direct (for measuring, or the last ulp).
      static const bool winograd_allowed = [] {
        const char* v = std::getenv("NIMBUS_ONEDNN_WINOGRAD");
        return !(v && std::string(v) == "0");
      }();
      const bool wino_shape = winograd_allowed && w[2] == 3 && w[3] == 3 && op.strides == Dims{1, 1} &&
                              op.dilations == Dims{1, 1} && g == 1 && ic % 16 == 0 && oc % 16 == 0 && ic >= 32 &&
                              oc >= 32;
      if (wino_shape) {
        try {
          pd = dnnl::convolution_forward::primitive_desc(
              dnnl::convolution_forward::desc(dnnl::prop_kind::forward_inference, algorithm::convolution_winograd,
                                              src_pref, wei_any, bias_md, dst_pref, strides, dil, pad_l, pad_r),
              attr, plan_.engine);
        } catch (const dnnl::error&) {
          pd = make_pd(src_pref, dst_pref);
        }
      } else if (plain_small) {
        try {
          pd = make_pd(current, dst_pref);
          if (is_reference(pd)) pd = make_pd(src_any, dst_pref);
        } catch (const dnnl::error&) {
          pd = make_pd(src_any, dst_pref);
        }
      } else {
        pd = make_pd(src_pref, dst_pref);
      }
      src_md = pd.src_desc(), wei_md = pd.weights_desc(), dst_md = pd.dst_desc(), scratch = pd.scratchpad_desc();
      prim = dnnl::convolution_forward(pd);
    } else {
      dnnl::deconvolution_forward::primitive_desc pd(
          dnnl::deconvolution_forward::desc(dnnl::prop_kind::forward_inference, algorithm::deconvolution_direct,
                                            src_any, wei_any, bias_md, dst_any, strides, dil, pad_l, pad_r),
          attr, plan_.engine);
      src_md = pd.src_desc(), wei_md = pd.weights_desc(), dst_md = pd.dst_desc(), scratch = pd.scratchpad_desc();
      prim = dnnl::deconvolution_forward(pd);
    }
    note_scratchpad(scratch);
    plan_.flops += 2.0 * static_cast<double>(product(deconv ? x : out)) * static_cast<double>(deconv ? oc / g : ic / g) *
                   static_cast<double>(w[2] * w[3]);
    const int src = get_as(op.in[0], src_md);
    const int weights = add_constant_as(wei_md, memory::desc(wdims, f32, user_tag), op.weights.f.data());
    const int bias = add_constant(bias_md, op.bias.data());
    // The sum post-op adds into what dst holds.
    const int dst = output_for(op, dst_md);
    Step s;
    s.what = deconv ? "deconvolution" : "convolution";
    s.prim = prim;
    s.tensor_args = {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, dst}};
    s.const_args = {{DNNL_ARG_WEIGHTS, weights}, {DNNL_ARG_BIAS, bias}};
    s.scratchpad = true;
    add_step(std::move(s));
    ir_to_plan_[op.out] = dst;
  }

  void pool(const IrOp& op) {
    const int src = ir_to_plan_.at(op.in[0]);
    const memory::desc dst_any(to_dnnl(dims(op.out)), memory::data_type::f32, Tag::any);
    dnnl::pooling_forward::primitive_desc pd(
        dnnl::pooling_forward::desc(dnnl::prop_kind::forward_inference, op.alg, md(src), dst_any,
                                    to_dnnl(op.strides), to_dnnl(op.kernel), to_dnnl(op.pad_l), to_dnnl(op.pad_r)),
        plain_attr(), plan_.engine);
    note_scratchpad(pd.scratchpad_desc());
    const int dst = add_tensor(pd.dst_desc());
    Step s;
    s.what = "pooling";
    s.prim = dnnl::pooling_forward(pd);
    s.tensor_args = {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, dst}};
    s.scratchpad = true;
    add_step(std::move(s));
    ir_to_plan_[op.out] = dst;
  }

  void eltwise(const IrOp& op) {
    const int src = ir_to_plan_.at(op.in[0]);
    dnnl::eltwise_forward::primitive_desc pd(
        dnnl::eltwise_forward::desc(dnnl::prop_kind::forward_inference, op.alg, md(src), op.alpha, op.beta),
        plain_attr(), plan_.engine);
    note_scratchpad(pd.scratchpad_desc());
    const int dst = output_in_place_of(op.in[0], pd.dst_desc());
    Step s;
    s.what = "eltwise";
    s.prim = dnnl::eltwise_forward(pd);
    s.tensor_args = {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, dst}};
    s.scratchpad = true;
    add_step(std::move(s));
    ir_to_plan_[op.out] = dst;
  }

  // Dims of `d` right-aligned to `rank` with leading 1s.
  static Dims padded_rank(const Dims& d, std::size_t rank) {
    Dims out(rank - d.size(), 1);
    out.insert(out.end(), d.begin(), d.end());
    return out;
  }

  void binary(const IrOp& op) {
    const Dims& out = dims(op.out);
    int src0 = ir_to_plan_.at(op.in[0]);
    // Blocked layouts with a channel tail (C not a block multiple) only have oneDNN's
    // reference kernel; plain layout has a fast one.
    const int block = channel_block(md(src0));
    if (block > 1 && out.size() == 4 && out[1] % block != 0) src0 = get_plain(op.in[0]);
    int src1 = -1, src1_const = -1;
    memory::desc src1_md;
    if (op.constant) {
      const Dims d = padded_rank(op.constant->dims, out.size());
      src1_md = plain_desc(d);
      const auto values = op.constant->as_floats();
      src1_const = add_constant(src1_md, values.data());
    } else {
      const Dims& d1 = dims(op.in[1]);
      if (d1 == out) {
        src1 = get_as(op.in[1], md(src0));
      } else {
        const int plain = get_plain(op.in[1]);
        src1 = add_view(plain_desc(padded_rank(d1, out.size())), plain);
      }
      src1_md = md(src1);
    }
    dnnl::binary::primitive_desc pd(dnnl::binary::desc(op.alg, md(src0), src1_md, md(src0)), attr_with(op.post),
                                    plan_.engine);
    note_scratchpad(pd.scratchpad_desc());
    const int dst = output_in_place_of(op.in[0], pd.dst_desc());
    Step s;
    s.what = "binary";
    s.prim = dnnl::binary(pd);
    s.tensor_args = {{DNNL_ARG_SRC_0, src0}, {DNNL_ARG_DST, dst}};
    if (src1 >= 0) s.tensor_args.emplace_back(DNNL_ARG_SRC_1, src1);
    if (src1_const >= 0) s.const_args.emplace_back(DNNL_ARG_SRC_1, src1_const);
    s.scratchpad = true;
    add_step(std::move(s));
    ir_to_plan_[op.out] = dst;
  }

  void sum(const IrOp& op) {
    const memory::desc& layout = md(ir_to_plan_.at(op.in[0]));
    std::vector<int> srcs;
    std::vector<memory::desc> mds;
    for (int t : op.in) {
      srcs.push_back(get_as(t, layout));
      mds.push_back(layout);
    }
    dnnl::sum::primitive_desc pd(layout, op.sum_scales, mds, plan_.engine, plain_attr());
    note_scratchpad(pd.scratchpad_desc());
    const int dst = writable(op.in[0], srcs[0]) ? add_tensor(pd.dst_desc(), srcs[0]) : add_tensor(pd.dst_desc());
    Step s;
    s.what = "sum";
    s.prim = dnnl::sum(pd);
    s.tensor_args = {{DNNL_ARG_DST, dst}};
    for (std::size_t k = 0; k < srcs.size(); ++k) s.tensor_args.emplace_back(DNNL_ARG_MULTIPLE_SRC + static_cast<int>(k), srcs[k]);
    s.scratchpad = true;
    add_step(std::move(s));
    ir_to_plan_[op.out] = dst;
  }

  void concat(const IrOp& op) {
    std::vector<int> srcs;
    std::vector<memory::desc> mds;
    // Channel concat of blocked tensors whose channel counts are not block multiples goes through plain layout.
    bool plain = false;
    for (int t : op.in) {
      const int block = channel_block(md(ir_to_plan_.at(t)));
      if (block > 1 && dims(t)[1] % block != 0 && op.axis == 1) plain = true;
      if (block == 0) plain = true;
    }
    for (int t : op.in) {
      srcs.push_back(plain ? get_plain(t) : ir_to_plan_.at(t));
      mds.push_back(md(srcs.back()));
    }
    dnnl::concat::primitive_desc pd(op.axis, mds, plan_.engine, plain_attr());
    note_scratchpad(pd.scratchpad_desc());
    const int dst = add_tensor(pd.dst_desc());
    Step s;
    s.what = "concat";
    s.prim = dnnl::concat(pd);
    s.tensor_args = {{DNNL_ARG_DST, dst}};
    for (std::size_t k = 0; k < srcs.size(); ++k) s.tensor_args.emplace_back(DNNL_ARG_MULTIPLE_SRC + static_cast<int>(k), srcs[k]);
    s.scratchpad = true;
    add_step(std::move(s));
    ir_to_plan_[op.out] = dst;
  }

  void slice(const IrOp& op) {
    int src = ir_to_plan_.at(op.in[0]);
    const Dims& out = dims(op.out);
    // A channel offset inside a block cannot be expressed as a view of a blocked layout.
    const auto f32 = memory::data_type::f32;
    const memory::dims sd = md(src).dims();
    const int block = md(src) == memory::desc(sd, f32, Tag::nChw8c) ? 8 : md(src) == memory::desc(sd, f32, Tag::nChw16c) ? 16 : 1;
    if (channel_block(md(src)) == 0 || (block > 1 && (op.ints[1] % block != 0 || out[1] % block != 0))) {
      src = get_plain(op.in[0]);
    }
    const memory::desc view_md = md(src).submemory_desc(to_dnnl(out), to_dnnl(op.ints));
    const int view = add_view(view_md, src);
    // Convolutions reorder their input into their own layout anyway: let them read the
    // window directly instead of copying it twice.
    const auto& users = consumers_[op.out];
    const bool only_convs = op.out != g_.output && !users.empty() &&
                            std::all_of(users.begin(), users.end(), [&](int u) {
                              const IrOp& c = g_.ops[static_cast<std::size_t>(u)];
                              return (c.kind == OpKind::Conv || c.kind == OpKind::Deconv) && c.in[0] == op.out &&
                                     c.sum_input != op.out;
                            });
    if (only_convs) {
      ir_to_plan_[op.out] = view;
      return;
    }
    const int dst = add_tensor(same_layout(md(src), out));
    add_reorder(view, dst, "slice");
    ir_to_plan_[op.out] = dst;
  }

  void resize(const IrOp& op) {
    int src = ir_to_plan_.at(op.in[0]);
    if (channel_block(md(src)) == 0) src = get_plain(op.in[0]);
    const int block = channel_block(md(src));
    const Dims& x = dims(op.in[0]);
    const Dims& out = dims(op.out);
    const memory::desc dst_md = kernel_layout(md(src), out);
    const int dst = output_for(op, dst_md);
    const kernels::BlockedShape shape{x[0], x[1], x[2], x[3], block};
    const kernels::ResizeParams params = op.resize;
    const std::int64_t oh = out[2], ow = out[3];
    const bool accumulate = op.sum_input >= 0;
    Step s;
    s.what = accumulate ? "resize+add" : "resize";
    s.kernel = [shape, params, oh, ow, accumulate](float* const* p) {
      kernels::resize(p[0], shape, p[1], oh, ow, params, accumulate);
    };
    s.kernel_tensors = {src, dst};
    add_step(std::move(s));
    ir_to_plan_[op.out] = dst;
  }

  void group_norm(const IrOp& op) {
    const Dims& x = dims(op.in[0]);
    int src;
    kernels::BlockedShape shape;
    if (x.size() == 4) {
      src = ir_to_plan_.at(op.in[0]);
      if (channel_block(md(src)) == 0) src = get_plain(op.in[0]);
      shape = {x[0], x[1], x[2], x[3], channel_block(md(src))};
    } else {
      // [N, C, ...] normalised as [N, C, 1, prod(...)] in plain layout.
      const std::int64_t rest = product(x) / (x[0] * x[1]);
      src = add_view(plain_desc({x[0], x[1], 1, rest}), get_plain(op.in[0]));
      shape = {x[0], x[1], 1, rest, 1};
    }
    int dst = writable(op.in[0], src) ? add_tensor(md(src), src) : add_tensor(md(src));
    const int groups = static_cast<int>(op.groups);
    const float eps = op.epsilon;
    const std::vector<float> gamma = op.scale, beta = op.shift;
    const kernels::Activation act = op.activation;
    Step s;
    s.what = "group norm";
    s.kernel = [shape, groups, eps, gamma, beta, act](float* const* p) {
      kernels::group_norm(p[0], p[1], shape, groups, eps, gamma, beta, act);
    };
    s.kernel_tensors = {src, dst};
    add_step(std::move(s));
    if (x.size() != 4) dst = add_view(plain_desc(x), dst);
    ir_to_plan_[op.out] = dst;
  }

  void reshape(const IrOp& op) {
    const int src = get_plain(op.in[0]);
    ir_to_plan_[op.out] = add_view(plain_desc(dims(op.out)), src);
  }

  void transpose(const IrOp& op) {
    const int src = get_plain(op.in[0]);
    const Dims& x = dims(op.in[0]);
    // The output read through the input's strides, permuted; the reorder makes it dense.
    Dims in_strides(x.size(), 1);
    for (int k = static_cast<int>(x.size()) - 2; k >= 0; --k) {
      in_strides[static_cast<std::size_t>(k)] = in_strides[static_cast<std::size_t>(k) + 1] * x[static_cast<std::size_t>(k) + 1];
    }
    memory::dims view_strides;
    for (auto p : op.ints) view_strides.push_back(in_strides[static_cast<std::size_t>(p)]);
    const int view = add_view(memory::desc(to_dnnl(dims(op.out)), memory::data_type::f32, view_strides), src);
    const int dst = add_tensor(plain_desc(dims(op.out)));
    add_reorder(view, dst, "transpose");
    ir_to_plan_[op.out] = dst;
  }

  void softmax(const IrOp& op) {
    const Dims& x = dims(op.in[0]);
    int src;
    int axis = op.axis;
    Dims work = x;
    const bool flatten = op.ints[0] != 0 && axis != static_cast<int>(x.size()) - 1;
    if (flatten) {
      std::int64_t outer = 1;
      for (int k = 0; k < axis; ++k) outer *= x[static_cast<std::size_t>(k)];
      work = {outer, product(x) / std::max<std::int64_t>(outer, 1)};
      src = add_view(plain_desc(work), get_plain(op.in[0]));
      axis = 1;
    } else {
      src = ir_to_plan_.at(op.in[0]);
    }
    dnnl::primitive prim;
    memory::desc dst_md;
    if (op.flag) {
      dnnl::logsoftmax_forward::primitive_desc pd(
          dnnl::logsoftmax_forward::desc(dnnl::prop_kind::forward_inference, md(src), axis), plain_attr(), plan_.engine);
      note_scratchpad(pd.scratchpad_desc());
      dst_md = pd.dst_desc();
      prim = dnnl::logsoftmax_forward(pd);
    } else {
      dnnl::softmax_forward::primitive_desc pd(
          dnnl::softmax_forward::desc(dnnl::prop_kind::forward_inference, md(src), axis), plain_attr(), plan_.engine);
      note_scratchpad(pd.scratchpad_desc());
      dst_md = pd.dst_desc();
      prim = dnnl::softmax_forward(pd);
    }
    int dst = add_tensor(dst_md);
    Step s;
    s.what = op.flag ? "logsoftmax" : "softmax";
    s.prim = prim;
    s.tensor_args = {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, dst}};
    s.scratchpad = true;
    add_step(std::move(s));
    if (flatten) dst = add_view(plain_desc(x), dst);
    ir_to_plan_[op.out] = dst;
  }

  void reduce(const IrOp& op) {
    const int src = get_plain(op.in[0]);
    const memory::desc dst_md = plain_desc(op.ints);
    dnnl::reduction::primitive_desc pd(dnnl::reduction::desc(op.alg, md(src), dst_md, op.alpha, 0.0f), plain_attr(),
                                       plan_.engine);
    note_scratchpad(pd.scratchpad_desc());
    const int dst = add_tensor(dst_md);
    Step s;
    s.what = "reduction";
    s.prim = dnnl::reduction(pd);
    s.tensor_args = {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, dst}};
    s.scratchpad = true;
    add_step(std::move(s));
    ir_to_plan_[op.out] = add_view(plain_desc(dims(op.out)), dst);
  }

  void matmul(const IrOp& op) {
    const Dims& out = dims(op.out);
    const int a = add_view(plain_desc(padded_rank(dims(op.in[0]), out.size())), get_plain(op.in[0]));
    int b = -1, b_const = -1;
    memory::desc b_md;
    if (op.constant) {
      b_md = plain_desc(padded_rank(op.constant->dims, out.size()));
      const auto values = op.constant->as_floats();
      b_const = add_constant(b_md, values.data());
    } else {
      b = add_view(plain_desc(padded_rank(dims(op.in[1]), out.size())), get_plain(op.in[1]));
      b_md = md(b);
    }
    memory::desc bias_md;
    int bias = -1;
    if (!op.bias.empty()) {
      Dims bd(out.size(), 1);
      bd.back() = static_cast<std::int64_t>(op.bias.size());
      bias_md = plain_desc(bd);
      bias = add_constant(bias_md, op.bias.data());
    }
    const memory::desc dst_md = plain_desc(out);
    plan_.flops += 2.0 * static_cast<double>(product(out)) * static_cast<double>(dims(op.in[0]).back());
    dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(md(a), b_md, bias_md, dst_md), plain_attr(), plan_.engine);
    note_scratchpad(pd.scratchpad_desc());
    const int dst = add_tensor(dst_md);
    Step s;
    s.what = "matmul";
    s.prim = dnnl::matmul(pd);
    s.tensor_args = {{DNNL_ARG_SRC, a}, {DNNL_ARG_DST, dst}};
    if (b >= 0) s.tensor_args.emplace_back(DNNL_ARG_WEIGHTS, b);
    if (b_const >= 0) s.const_args.emplace_back(DNNL_ARG_WEIGHTS, b_const);
    if (bias >= 0) s.const_args.emplace_back(DNNL_ARG_BIAS, bias);
    s.scratchpad = true;
    add_step(std::move(s));
    ir_to_plan_[op.out] = dst;
  }

  void pad(const IrOp& op) {
    const int src = get_plain(op.in[0]);
    const Dims& out = dims(op.out);
    const int dst = add_tensor(plain_desc(out));
    const float value = op.pad_value;
    const auto count = static_cast<std::size_t>(product(out));
    Step fill;
    fill.what = "pad fill";
    fill.kernel = [value, count](float* const* p) { std::fill(p[0], p[0] + count, value); };
    fill.kernel_tensors = {dst};
    add_step(std::move(fill));
    const int window = add_view(md(dst).submemory_desc(to_dnnl(dims(op.in[0])), to_dnnl(op.ints)), dst);
    add_reorder(src, window, "pad copy");
    ir_to_plan_[op.out] = dst;
  }

  // Buffers for every tensor that owns storage, reused once a tensor is dead.
  void assign_buffers() {
    const std::size_t n = plan_.tensors.size();
    std::vector<int> first(n, -1), last(n, -1);
    const auto touch = [&](int t, int step) {
      const int r = root(t);
      if (first[static_cast<std::size_t>(r)] < 0) first[static_cast<std::size_t>(r)] = step;
      last[static_cast<std::size_t>(r)] = std::max(last[static_cast<std::size_t>(r)], step);
    };
    for (std::size_t k = 0; k < plan_.steps.size(); ++k) {
      const Step& s = plan_.steps[k];
      for (const auto& [arg, t] : s.tensor_args) touch(t, static_cast<int>(k));
      for (int t : s.kernel_tensors) touch(t, static_cast<int>(k));
    }
    plan_.buffer_of.assign(n, -1);
    std::vector<bool> busy;
    std::vector<std::vector<int>> release(plan_.steps.size());
    for (std::size_t t = 0; t < n; ++t) {
      if (last[t] >= 0) release[static_cast<std::size_t>(last[t])].push_back(static_cast<int>(t));
    }
    for (std::size_t k = 0; k < plan_.steps.size(); ++k) {
      for (std::size_t t = 0; t < n; ++t) {
        if (first[t] != static_cast<int>(k) || plan_.tensors[t].base >= 0) continue;
        if (static_cast<int>(t) == plan_.input || static_cast<int>(t) == plan_.output) continue;
        const std::size_t need = plan_.tensors[t].md.get_size();
        int best = -1;
        for (std::size_t b = 0; b < busy.size(); ++b) {
          if (busy[b]) continue;
          const bool fits = plan_.buffer_bytes[b] >= need;
          if (best < 0) {
            best = static_cast<int>(b);
            continue;
          }
          const std::size_t cur = plan_.buffer_bytes[static_cast<std::size_t>(best)];
          const bool best_fits = cur >= need;
          if ((fits && (!best_fits || plan_.buffer_bytes[b] < cur)) || (!fits && !best_fits && plan_.buffer_bytes[b] > cur)) {
            best = static_cast<int>(b);
          }
        }
        if (best < 0) {
          plan_.buffer_bytes.push_back(0);
          busy.push_back(false);
          best = static_cast<int>(busy.size()) - 1;
        }
        plan_.buffer_bytes[static_cast<std::size_t>(best)] = std::max(plan_.buffer_bytes[static_cast<std::size_t>(best)], need);
        busy[static_cast<std::size_t>(best)] = true;
        plan_.buffer_of[t] = best;
      }
      for (int t : release[k]) {
        if (plan_.buffer_of[static_cast<std::size_t>(t)] >= 0) busy[static_cast<std::size_t>(plan_.buffer_of[static_cast<std::size_t>(t)])] = false;
      }
    }
  }

  const IrGraph& g_;
  Plan& plan_;
  std::unordered_map<int, int> ir_to_plan_;
  std::vector<std::pair<std::pair<int, memory::desc>, int>> converted_;
  std::vector<int> last_use_;
  std::map<int, std::vector<int>> consumers_;
  std::set<int> viewed_roots_;
  int current_ = -1;
};

}  // namespace

void lower(const IrGraph& graph, Plan& plan) { Lowering(graph, plan).run(); }

// Per-backend state: the activation buffers and the memory objects bound to them.
struct RunState::Impl {
  explicit Impl(std::shared_ptr<const Plan> plan) : plan_(std::move(plan)), stream_(plan_->engine) {
    for (std::size_t bytes : plan_->buffer_bytes) buffers_.emplace_back(allocate(bytes));
    scratchpad_.reset(allocate(std::max<std::size_t>(plan_->scratchpad_bytes, 64)));
    const auto& tensors = plan_->tensors;
    memories_.resize(tensors.size());
    // Base tensors first, so views can borrow their handles.
    for (std::size_t t = 0; t < tensors.size(); ++t) {
      if (tensors[t].base >= 0) continue;
      void* handle = plan_->buffer_of[t] >= 0 ? buffers_[static_cast<std::size_t>(plan_->buffer_of[t])].get()
                                              : DNNL_MEMORY_NONE;
      memories_[t] = memory(tensors[t].md, plan_->engine, handle);
    }
    for (std::size_t t = 0; t < tensors.size(); ++t) {
      if (tensors[t].base < 0) continue;
      views_.push_back(static_cast<int>(t));
    }
    bind_views();
    scratch_memory_ = memory(memory::desc({static_cast<memory::dim>(std::max<std::size_t>(plan_->scratchpad_bytes, 64))},
                                          memory::data_type::u8, Tag::x),
                             plan_->engine, scratchpad_.get());
    for (const Step& s : plan_->steps) {
      std::unordered_map<int, memory> args;
      for (const auto& [arg, t] : s.tensor_args) args[arg] = memories_[static_cast<std::size_t>(t)];
      for (const auto& [arg, c] : s.const_args) args[arg] = plan_->constants[static_cast<std::size_t>(c)];
      if (s.scratchpad) args[DNNL_ARG_SCRATCHPAD] = scratch_memory_;
      args_.push_back(std::move(args));
    }
  }

  ~Impl() {
    if (profile_.empty()) return;
    std::vector<std::pair<double, std::string>> rows;
    double total = 0.0;
    for (const auto& [what, ms] : profile_) {
      rows.emplace_back(ms, what);
      total += ms;
    }
    std::sort(rows.rbegin(), rows.rend());
    std::fprintf(stderr, "oneDNN profile over %d runs (ms per run):\n", profiled_runs_);
    for (const auto& [ms, what] : rows) std::fprintf(stderr, "%9.3f  %s\n", ms / profiled_runs_, what.c_str());
    std::fprintf(stderr, "%9.3f  total\n", total / profiled_runs_);
  }

  void execute(const float* input, float* output) {
    memories_[static_cast<std::size_t>(plan_->input)].set_data_handle(const_cast<float*>(input));
    memories_[static_cast<std::size_t>(plan_->output)].set_data_handle(output);
    bind_views();
    // NIMBUS_ONEDNN_PROFILE=1: time every step and print a table when the backend goes away.
    static const bool profiling = std::getenv("NIMBUS_ONEDNN_PROFILE") != nullptr;
    if (profiling) ++profiled_runs_;
    for (std::size_t k = 0; k < plan_->steps.size(); ++k) {
      const Step& s = plan_->steps[k];
      const auto start = profiling ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point{};
      if (s.kernel) {
        pointers_.clear();  // capacity kept across runs: no allocation per chip
        for (int t : s.kernel_tensors) {
          pointers_.push_back(static_cast<float*>(memories_[static_cast<std::size_t>(t)].get_data_handle()));
        }
        s.kernel(pointers_.data());
      } else {
        s.prim.execute(stream_, args_[k]);
      }
      if (profiling) {
        stream_.wait();
        profile_[fmt::format("{:3d} {}", k, s.what)] +=
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
      }
    }
    stream_.wait();
  }

  static char* allocate(std::size_t bytes) {
    void* p = std::aligned_alloc(64, (std::max<std::size_t>(bytes, 64) + 63) / 64 * 64);
    if (!p) throw std::bad_alloc();
    return static_cast<char*>(p);
  }
  struct Free {
    void operator()(char* p) const { std::free(p); }
  };
  int root(int t) const {
    while (plan_->tensors[static_cast<std::size_t>(t)].base >= 0) t = plan_->tensors[static_cast<std::size_t>(t)].base;
    return t;
  }
  // Views share their root's storage (the input/output roots change per run).
  void bind_views() {
    for (int t : views_) {
      void* handle = memories_[static_cast<std::size_t>(root(t))].get_data_handle();
      if (!memories_[static_cast<std::size_t>(t)]) {
        memories_[static_cast<std::size_t>(t)] = memory(plan_->tensors[static_cast<std::size_t>(t)].md, plan_->engine, handle);
      } else {
        memories_[static_cast<std::size_t>(t)].set_data_handle(handle);
      }
    }
  }

  std::shared_ptr<const Plan> plan_;
  dnnl::stream stream_;
  std::vector<std::unique_ptr<char, Free>> buffers_;
  std::unique_ptr<char, Free> scratchpad_;
  std::vector<memory> memories_;
  std::vector<int> views_;
  memory scratch_memory_;
  std::vector<std::unordered_map<int, memory>> args_;
  std::map<std::string, double> profile_;
  int profiled_runs_ = 0;
  std::vector<float*> pointers_;
};


RunState::RunState(std::shared_ptr<const Plan> plan) : impl_(std::make_unique<Impl>(std::move(plan))) {}
RunState::~RunState() = default;
void RunState::execute(const float* input, float* output) { impl_->execute(input, output); }

}  // namespace nimbus::onednn
