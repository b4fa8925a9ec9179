#include "nimbus/inference/onednn_backend.h"

#include <algorithm>
#include <cfloat>
#include <chrono>
#include <cstdio>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <numeric>
#include <optional>
#include <set>
#include <unordered_map>

#include <fmt/format.h>
#include <oneapi/dnnl/dnnl.hpp>
#include <onnx/onnx_pb.h>

#include "nimbus/inference/blocked_kernels.h"
#include "nimbus/inference/onnx_graph.h"

namespace nimbus {
namespace {

using dnnl::algorithm;
using dnnl::memory;
using onnx_graph::Tensor;
using Dims = std::vector<std::int64_t>;
using Tag = memory::format_tag;

// ---------------------------------------------------------------------------
// The engine's intermediate representation: the data path of the graph after
// constant folding, with every shape resolved for one input shape.

enum class OpKind {
  Conv,           // incl. depthwise/grouped; weights/bias folded; post-ops
  Deconv,         // ConvTranspose
  ChannelAffine,  // y = scale[c] * x + shift[c] (BatchNormalization, per-channel Mul/Add)
  Pool,
  Eltwise,
  Binary,
  Sum,
  Concat,
  Slice,
  Resize,
  GroupNorm,
  Reshape,
  Transpose,
  Softmax,
  Reduce,
  MatMul,
  Pad,
};

struct PostOp {
  bool is_sum = false;
  algorithm alg = algorithm::eltwise_relu;
  float alpha = 0.0f, beta = 0.0f;
};

struct IrOp {
  OpKind kind = OpKind::Eltwise;
  std::string what;     // the ONNX node, for messages
  std::vector<int> in;  // runtime tensors read
  int out = -1;
  bool dead = false;

  // Conv / Deconv
  Tensor weights;
  std::vector<float> bias;
  std::int64_t group = 1;
  Dims strides, dilations, pad_l, pad_r, kernel;
  // post-ops of Conv / Deconv / Binary; a sum post-op reads `sum_input`
  std::vector<PostOp> post;
  int sum_input = -1;
  // Eltwise / Binary / Pool / Reduce algorithm and its parameters
  algorithm alg = algorithm::eltwise_relu;
  float alpha = 0.0f, beta = 0.0f;
  // Binary with a constant second operand
  std::optional<Tensor> constant;
  // ChannelAffine scale/shift; GroupNorm gamma/beta
  std::vector<float> scale, shift;
  std::int64_t groups = 1;
  float epsilon = 1e-5f;
  kernels::Activation activation;
  // Sum scales
  std::vector<float> sum_scales;
  // Slice offsets, Transpose permutation, Reduce axes, Pad begins
  Dims ints;
  int axis = 0;
  bool flag = false;  // Softmax: log-softmax; Reduce: keepdims
  kernels::ResizeParams resize;
  float pad_value = 0.0f;
};

struct IrTensor {
  Dims dims;
  int producer = -1;  // op index, -1 for the graph input
};

struct IrGraph {
  std::vector<IrTensor> tensors;
  std::vector<IrOp> ops;
  int input = -1;
  int output = -1;

  int add_tensor(Dims dims) {
    tensors.push_back({std::move(dims), -1});
    return static_cast<int>(tensors.size()) - 1;
  }
  int add_op(IrOp op, Dims out_dims) {
    op.out = add_tensor(std::move(out_dims));
    ops.push_back(std::move(op));
    tensors.back().producer = static_cast<int>(ops.size()) - 1;
    return ops.back().out;
  }
};

std::int64_t product(const Dims& d) {
  return std::accumulate(d.begin(), d.end(), std::int64_t{1}, std::multiplies<>());
}

// ---------------------------------------------------------------------------
// Import: ONNX nodes -> IR ops, folding everything that does not depend on pixels.

class Importer {
 public:
  Importer(const onnx::GraphProto& graph, int opset, const std::unordered_map<std::string, Tensor>& initializers,
           const std::string& input_name, const Dims& input_dims)
      : graph_(graph), opset_(opset), initializers_(initializers) {
    g_.input = g_.add_tensor(input_dims);
    runtime_[input_name] = g_.input;
  }

  IrGraph run() {
    for (const auto& node : graph_.node()) import_node(node);
    if (graph_.output_size() < 1) throw UnsupportedModelError("the graph declares no output");
    const std::string& out = graph_.output(0).name();
    auto it = runtime_.find(out);
    if (it == runtime_.end()) {
      throw UnsupportedModelError(fmt::format("output '{}' does not depend on the input", out));
    }
    g_.output = it->second;
    return std::move(g_);
  }

 private:
  [[noreturn]] void unsupported(const onnx::NodeProto& node, const std::string& what) const {
    throw UnsupportedModelError(fmt::format("{}: {}", onnx_graph::describe(node), what));
  }

  const Tensor* constant(const std::string& name) const {
    if (name.empty()) return nullptr;
    if (auto it = folded_.find(name); it != folded_.end()) return &it->second;
    if (auto it = initializers_.find(name); it != initializers_.end()) return &it->second;
    return nullptr;
  }
  bool is_runtime(const std::string& name) const { return !name.empty() && runtime_.count(name); }
  int rt(const onnx::NodeProto& node, int k) const {
    if (k >= node.input_size() || !is_runtime(node.input(k))) unsupported(node, fmt::format("input {} must be data", k));
    return runtime_.at(node.input(k));
  }
  const Tensor& cst(const onnx::NodeProto& node, int k) const {
    const Tensor* t = k < node.input_size() ? constant(node.input(k)) : nullptr;
    if (!t) unsupported(node, fmt::format("input {} must be a constant (initializer)", k));
    return *t;
  }
  const Tensor* optional_cst(const onnx::NodeProto& node, int k) const {
    if (k >= node.input_size() || node.input(k).empty()) return nullptr;
    if (is_runtime(node.input(k))) unsupported(node, fmt::format("input {} must be a constant", k));
    const Tensor* t = constant(node.input(k));
    if (!t) unsupported(node, fmt::format("input {} ('{}') is not defined before use", k, node.input(k)));
    return t;
  }
  const Dims& dims(int t) const { return g_.tensors[static_cast<std::size_t>(t)].dims; }

  void bind(const onnx::NodeProto& node, int k, int tensor) { runtime_[node.output(k)] = tensor; }

  int emit(const onnx::NodeProto& node, IrOp op, Dims out_dims, int output = 0) {
    op.what = onnx_graph::describe(node);
    const int t = g_.add_op(std::move(op), std::move(out_dims));
    if (output < node.output_size()) bind(node, output, t);
    return t;
  }

  void import_node(const onnx::NodeProto& node) {
    if (!node.domain().empty() && node.domain() != "ai.onnx") {
      unsupported(node, fmt::format("operator domain '{}'", node.domain()));
    }
    bool any_runtime = false;
    for (const auto& name : node.input()) any_runtime = any_runtime || is_runtime(name);
    const std::string& op = node.op_type();
    if (!any_runtime || op == "Shape" || op == "Size") {
      fold(node);
      return;
    }
    if (op == "Identity" || op == "Dropout" ||
        (op == "Cast" && onnx_graph::attr_int(node, "to", 1) == onnx::TensorProto::FLOAT)) {
      bind(node, 0, rt(node, 0));
      return;
    }
    if (op == "Conv") return conv(node);
    if (op == "ConvTranspose") return deconv(node);
    if (op == "BatchNormalization") return batch_norm(node);
    if (op == "InstanceNormalization") return instance_norm(node);
    if (op == "MaxPool" || op == "AveragePool" || op == "GlobalAveragePool" || op == "GlobalMaxPool") return pool(node);
    if (op == "Add" || op == "Sub" || op == "Mul" || op == "Div" || op == "Max" || op == "Min" || op == "Pow")
      return binary(node);
    if (op == "Sum" || op == "Mean") return sum(node);
    if (op == "Concat") return concat(node);
    if (op == "Split") return split(node);
    if (op == "Slice") return slice(node);
    if (op == "Resize" || op == "Upsample") return resize(node);
    if (op == "Reshape" || op == "Flatten" || op == "Squeeze" || op == "Unsqueeze") return reshape(node);
    if (op == "Transpose") return transpose(node);
    if (op == "Softmax" || op == "LogSoftmax") return softmax(node);
    if (op.rfind("Reduce", 0) == 0) return reduce(node);
    if (op == "MatMul") return matmul(node);
    if (op == "Gemm") return gemm(node);
    if (op == "Pad") return pad(node);
    if (eltwise(node)) return;
    unsupported(node, "this operator is not implemented by the oneDNN engine");
  }

  void fold(const onnx::NodeProto& node) {
    std::vector<Tensor> shape_holders;  // Shape/Size of data tensors see only their dims
    shape_holders.reserve(static_cast<std::size_t>(node.input_size()));
    std::vector<const Tensor*> inputs;
    for (const auto& name : node.input()) {
      if (name.empty()) {
        inputs.push_back(nullptr);
      } else if (is_runtime(name)) {
        Tensor holder;
        holder.dims = dims(runtime_.at(name));
        shape_holders.push_back(std::move(holder));
        inputs.push_back(&shape_holders.back());
      } else {
        const Tensor* t = constant(name);
        if (!t) unsupported(node, fmt::format("input '{}' is not defined before use", name));
        inputs.push_back(t);
      }
    }
    std::vector<Tensor> outputs;
    if (!onnx_graph::fold_constant(node, opset_, inputs, outputs)) {
      unsupported(node, "constant inputs of this operator are not evaluated by the oneDNN engine");
    }
    for (std::size_t k = 0; k < outputs.size() && static_cast<int>(k) < node.output_size(); ++k) {
      folded_[node.output(static_cast<int>(k))] = std::move(outputs[k]);
    }
  }

  // Padding of one spatial axis from auto_pad / pads (ONNX rules).
  void spatial_padding(const onnx::NodeProto& node, std::int64_t in, std::int64_t k, std::int64_t s, std::int64_t d,
                       std::int64_t explicit_begin, std::int64_t explicit_end, std::int64_t& begin,
                       std::int64_t& end) const {
    const std::string auto_pad = onnx_graph::attr_string(node, "auto_pad", "NOTSET");
    const std::int64_t extent = (k - 1) * d + 1;
    if (auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER") {
      const std::int64_t out = (in + s - 1) / s;
      const std::int64_t total = std::max<std::int64_t>(0, (out - 1) * s + extent - in);
      begin = auto_pad == "SAME_UPPER" ? total / 2 : total - total / 2;
      end = total - begin;
    } else if (auto_pad == "VALID") {
      begin = end = 0;
    } else if (auto_pad == "NOTSET" || auto_pad.empty()) {
      begin = explicit_begin;
      end = explicit_end;
    } else {
      unsupported(node, fmt::format("auto_pad '{}'", auto_pad));
    }
  }

  // Kernel, strides, dilations and pads of a 2-D window op.
  void window(const onnx::NodeProto& node, const Dims& x, const Dims& kernel, IrOp& op) const {
    if (kernel.size() != 2 || x.size() != 4) unsupported(node, "only 2-D (N x C x H x W) windows are implemented");
    op.kernel = kernel;
    op.strides = onnx_graph::attr_ints(node, "strides");
    if (op.strides.empty()) op.strides = {1, 1};
    op.dilations = onnx_graph::attr_ints(node, "dilations");
    if (op.dilations.empty()) op.dilations = {1, 1};
    Dims pads = onnx_graph::attr_ints(node, "pads");
    if (pads.empty()) pads = {0, 0, 0, 0};
    if (op.strides.size() != 2 || op.dilations.size() != 2 || pads.size() != 4) {
      unsupported(node, "strides/dilations/pads do not match a 2-D window");
    }
    for (auto v : op.strides)
      if (v < 1) unsupported(node, "a stride below 1");
    for (auto v : op.dilations)
      if (v < 1) unsupported(node, "a dilation below 1");
    for (auto v : pads)
      if (v < 0) unsupported(node, "negative padding");
    op.pad_l.assign(2, 0);
    op.pad_r.assign(2, 0);
    for (int a = 0; a < 2; ++a) {
      spatial_padding(node, x[static_cast<std::size_t>(2 + a)], kernel[static_cast<std::size_t>(a)],
                      op.strides[static_cast<std::size_t>(a)], op.dilations[static_cast<std::size_t>(a)],
                      pads[static_cast<std::size_t>(a)], pads[static_cast<std::size_t>(a + 2)],
                      op.pad_l[static_cast<std::size_t>(a)], op.pad_r[static_cast<std::size_t>(a)]);
    }
  }

  std::int64_t window_out(std::int64_t in, const IrOp& op, int a, bool ceil_mode = false) const {
    const auto k = static_cast<std::size_t>(a);
    const std::int64_t extent = (op.kernel[k] - 1) * op.dilations[k] + 1;
    const std::int64_t span = in + op.pad_l[k] + op.pad_r[k] - extent;
    if (span < 0) return 0;
    std::int64_t out = (ceil_mode ? (span + op.strides[k] - 1) / op.strides[k] : span / op.strides[k]) + 1;
    // A last window that starts in the right padding is dropped (torch, onnxruntime).
    if (ceil_mode && (out - 1) * op.strides[k] >= in + op.pad_l[k]) --out;
    return out;
  }

  void conv(const onnx::NodeProto& node) {
    const int x = rt(node, 0);
    IrOp op;
    op.kind = OpKind::Conv;
    op.in = {x};
    op.weights = cst(node, 1);
    if (op.weights.is_int) unsupported(node, "integer weights");
    const Dims& w = op.weights.dims;
    const Dims& xd = dims(x);
    if (w.size() != 4) unsupported(node, "only 2-D convolutions are implemented");
    window(node, xd, {w[2], w[3]}, op);
    op.group = onnx_graph::attr_int(node, "group", 1);
    if (op.group < 1 || xd[1] != w[1] * op.group || w[0] % op.group != 0) {
      unsupported(node, fmt::format("weights [{}] with group {} do not fit an input of {} channels",
                                    fmt::join(w, ","), op.group, xd[1]));
    }
    if (const Tensor* b = optional_cst(node, 2)) {
      op.bias = b->as_floats();
      if (static_cast<std::int64_t>(op.bias.size()) != w[0]) unsupported(node, "bias size differs from output channels");
    } else {
      op.bias.assign(static_cast<std::size_t>(w[0]), 0.0f);
    }
    const Dims out{xd[0], w[0], window_out(xd[2], op, 0), window_out(xd[3], op, 1)};
    if (out[2] < 1 || out[3] < 1) unsupported(node, "the window is larger than the padded input");
    emit(node, std::move(op), out);
  }

  void deconv(const onnx::NodeProto& node) {
    const int x = rt(node, 0);
    IrOp op;
    op.kind = OpKind::Deconv;
    op.in = {x};
    op.weights = cst(node, 1);
    const Dims& w = op.weights.dims;
    const Dims& xd = dims(x);
    if (w.size() != 4 || xd.size() != 4) unsupported(node, "only 2-D transposed convolutions are implemented");
    op.group = onnx_graph::attr_int(node, "group", 1);
    if (op.group < 1 || w[0] != xd[1]) unsupported(node, "weights do not fit the input channels");
    const std::int64_t oc = w[1] * op.group;
    for (auto v : onnx_graph::attr_ints(node, "output_padding"))
      if (v != 0) unsupported(node, "output_padding");
    if (onnx_graph::has_attr(node, "output_shape")) unsupported(node, "output_shape");
    const std::string auto_pad = onnx_graph::attr_string(node, "auto_pad", "NOTSET");
    if (auto_pad != "NOTSET" && !auto_pad.empty()) unsupported(node, fmt::format("auto_pad '{}'", auto_pad));
    op.kernel = {w[2], w[3]};
    op.strides = onnx_graph::attr_ints(node, "strides");
    if (op.strides.empty()) op.strides = {1, 1};
    op.dilations = onnx_graph::attr_ints(node, "dilations");
    if (op.dilations.empty()) op.dilations = {1, 1};
    Dims pads = onnx_graph::attr_ints(node, "pads");
    if (pads.empty()) pads = {0, 0, 0, 0};
    if (op.strides.size() != 2 || op.dilations.size() != 2 || pads.size() != 4) unsupported(node, "non 2-D attributes");
    op.pad_l = {pads[0], pads[1]};
    op.pad_r = {pads[2], pads[3]};
    if (const Tensor* b = optional_cst(node, 2)) {
      op.bias = b->as_floats();
    } else {
      op.bias.assign(static_cast<std::size_t>(oc), 0.0f);
    }
    Dims out{xd[0], oc, 0, 0};
    for (int a = 0; a < 2; ++a) {
      const auto k = static_cast<std::size_t>(a);
      out[2 + k] = (xd[2 + k] - 1) * op.strides[k] - op.pad_l[k] - op.pad_r[k] + (op.kernel[k] - 1) * op.dilations[k] + 1;
      if (out[2 + k] < 1) unsupported(node, "an empty output");
    }
    emit(node, std::move(op), out);
  }

  void batch_norm(const onnx::NodeProto& node) {
    const int x = rt(node, 0);
    const auto scale = cst(node, 1).as_floats(), bias = cst(node, 2).as_floats(), mean = cst(node, 3).as_floats(),
               var = cst(node, 4).as_floats();
    const float eps = onnx_graph::attr_float(node, "epsilon", 1e-5f);
    const Dims& xd = dims(x);
    if (xd.size() < 2 || scale.size() != static_cast<std::size_t>(xd[1]) || bias.size() != scale.size() ||
        mean.size() != scale.size() || var.size() != scale.size()) {
      unsupported(node, "parameters do not match the channels");
    }
    IrOp op;
    op.kind = OpKind::ChannelAffine;
    op.in = {x};
    for (std::size_t c = 0; c < scale.size(); ++c) {
      const double a = scale[c] / std::sqrt(static_cast<double>(var[c]) + eps);
      op.scale.push_back(static_cast<float>(a));
      op.shift.push_back(static_cast<float>(bias[c] - mean[c] * a));
    }
    emit(node, std::move(op), xd);
  }

  void instance_norm(const onnx::NodeProto& node) {
    const int x = rt(node, 0);
    const Dims& xd = dims(x);
    IrOp op;
    op.kind = OpKind::GroupNorm;
    op.in = {x};
    op.scale = cst(node, 1).as_floats();
    op.shift = cst(node, 2).as_floats();
    if (xd.size() < 3 || op.scale.size() != static_cast<std::size_t>(xd[1]) || op.shift.size() != op.scale.size()) {
      unsupported(node, "scale/bias do not match the channels");
    }
    op.groups = xd[1];
    op.epsilon = onnx_graph::attr_float(node, "epsilon", 1e-5f);
    emit(node, std::move(op), xd);
  }

  void pool(const onnx::NodeProto& node) {
    const int x = rt(node, 0);
    const Dims& xd = dims(x);
    const std::string& type = node.op_type();
    if (xd.size() != 4) unsupported(node, "only 2-D pooling is implemented");
    IrOp op;
    op.kind = OpKind::Pool;
    op.in = {x};
    const bool global = type.rfind("Global", 0) == 0;
    const bool is_max = type == "MaxPool" || type == "GlobalMaxPool";
    if (node.output_size() > 1 && !node.output(1).empty()) unsupported(node, "the Indices output");
    bool ceil_mode = false;
    if (global) {
      op.kernel = {xd[2], xd[3]};
      op.strides = {1, 1};
      op.dilations = {1, 1};
      op.pad_l = op.pad_r = {0, 0};
    } else {
      window(node, xd, onnx_graph::attr_ints(node, "kernel_shape"), op);
      ceil_mode = onnx_graph::attr_int(node, "ceil_mode", 0) != 0;
      if (op.dilations != Dims{1, 1}) unsupported(node, "dilated pooling");
    }
    const bool include_pad = onnx_graph::attr_int(node, "count_include_pad", 0) != 0;
    op.alg = is_max ? algorithm::pooling_max
                    : (include_pad ? algorithm::pooling_avg_include_padding : algorithm::pooling_avg_exclude_padding);
    const Dims out{xd[0], xd[1], window_out(xd[2], op, 0, ceil_mode), window_out(xd[3], op, 1, ceil_mode)};
    if (out[2] < 1 || out[3] < 1) unsupported(node, "the window is larger than the padded input");
    // oneDNN's output size is floor-based: express ceil mode as extra right padding.
    for (int a = 0; a < 2; ++a) {
      const auto k = static_cast<std::size_t>(a);
      op.pad_r[k] = (out[2 + k] - 1) * op.strides[k] + op.kernel[k] - xd[2 + k] - op.pad_l[k];
    }
    emit(node, std::move(op), out);
  }

  bool eltwise(const onnx::NodeProto& node) {
    const std::string& t = node.op_type();
    IrOp op;
    op.kind = OpKind::Eltwise;
    if (t == "Relu") {
      op.alg = algorithm::eltwise_relu;
    } else if (t == "LeakyRelu") {
      op.alg = algorithm::eltwise_relu;
      op.alpha = onnx_graph::attr_float(node, "alpha", 0.01f);
    } else if (t == "Sigmoid") {
      op.alg = algorithm::eltwise_logistic;
    } else if (t == "Tanh") {
      op.alg = algorithm::eltwise_tanh;
    } else if (t == "Elu") {
      op.alg = algorithm::eltwise_elu;
      op.alpha = onnx_graph::attr_float(node, "alpha", 1.0f);
    } else if (t == "Exp") {
      op.alg = algorithm::eltwise_exp;
    } else if (t == "Log") {
      op.alg = algorithm::eltwise_log;
    } else if (t == "Abs") {
      op.alg = algorithm::eltwise_abs;
    } else if (t == "Sqrt") {
      op.alg = algorithm::eltwise_sqrt;
    } else if (t == "Neg") {
      op.alg = algorithm::eltwise_linear;
      op.alpha = -1.0f;
    } else if (t == "Reciprocal") {
      op.alg = algorithm::eltwise_pow;
      op.alpha = 1.0f;
      op.beta = -1.0f;
    } else if (t == "HardSwish") {
      op.alg = algorithm::eltwise_hardswish;
    } else if (t == "Mish") {
      op.alg = algorithm::eltwise_mish;
    } else if (t == "Round") {
      op.alg = algorithm::eltwise_round;
    } else if (t == "Clip") {
      op.alg = algorithm::eltwise_clip_v2;
      op.alpha = -FLT_MAX;
      op.beta = FLT_MAX;
      if (opset_ < 11) {
        op.alpha = onnx_graph::attr_float(node, "min", -FLT_MAX);
        op.beta = onnx_graph::attr_float(node, "max", FLT_MAX);
      } else {
        if (const Tensor* lo = optional_cst(node, 1)) op.alpha = static_cast<float>(lo->value(0));
        if (const Tensor* hi = optional_cst(node, 2)) op.beta = static_cast<float>(hi->value(0));
      }
    } else {
      return false;
    }
    const int x = rt(node, 0);
    op.in = {x};
    emit(node, std::move(op), dims(x));
    return true;
  }

  // Is `c` a per-channel vector for a data tensor of dims `x` (broadcast only along axis 1)?
  static bool per_channel(const Tensor& c, const Dims& x) {
    if (x.size() < 2 || c.dims.size() > x.size()) return false;
    const std::size_t offset = x.size() - c.dims.size();
    for (std::size_t k = 0; k < c.dims.size(); ++k) {
      const std::size_t axis = k + offset;
      const std::int64_t d = c.dims[k];
      if (axis == 1 ? (d != x[1] && d != 1) : d != 1) return false;
    }
    return true;
  }

  void binary(const onnx::NodeProto& node) {
    const std::string& t = node.op_type();
    const bool a_rt = is_runtime(node.input(0));
    const bool b_rt = node.input_size() > 1 && is_runtime(node.input(1));
    if (node.input_size() != 2) unsupported(node, "expects two inputs");
    const bool commutative = t == "Add" || t == "Mul" || t == "Max" || t == "Min";
    const std::map<std::string, algorithm> algs{{"Add", algorithm::binary_add}, {"Sub", algorithm::binary_sub},
                                                {"Mul", algorithm::binary_mul}, {"Div", algorithm::binary_div},
                                                {"Max", algorithm::binary_max}, {"Min", algorithm::binary_min}};
    if (a_rt && b_rt) {
      int a = rt(node, 0), b = rt(node, 1);
      const Dims out = onnx_graph::broadcast_dims(dims(a), dims(b), node);
      if (out != dims(a)) {
        if (out == dims(b) && commutative) {
          std::swap(a, b);
        } else {
          unsupported(node, "the first input would need broadcasting");
        }
      }
      if (t == "Pow") unsupported(node, "a data-dependent exponent");
      IrOp op;
      op.kind = OpKind::Binary;
      op.alg = algs.at(t);
      op.in = {a, b};
      emit(node, std::move(op), out);
      return;
    }
    const int x = a_rt ? rt(node, 0) : rt(node, 1);
    const Tensor& c = a_rt ? cst(node, 1) : cst(node, 0);
    const bool x_first = a_rt;
    const Dims& xd = dims(x);
    const Dims out = onnx_graph::broadcast_dims(xd, c.dims, node);
    if (out != xd) unsupported(node, "a constant operand that enlarges the data tensor");
    IrOp op;
    op.in = {x};
    if (c.numel() == 1) {
      const auto s = static_cast<float>(c.value(0));
      op.kind = OpKind::Eltwise;
      op.alg = algorithm::eltwise_linear;
      if (t == "Add") {
        op.alpha = 1.0f, op.beta = s;
      } else if (t == "Sub") {
        op.alpha = x_first ? 1.0f : -1.0f, op.beta = x_first ? -s : s;
      } else if (t == "Mul") {
        op.alpha = s;
      } else if (t == "Div" && x_first) {
        op.alpha = 1.0f / s;
      } else if (t == "Div") {
        op.alg = algorithm::eltwise_pow, op.alpha = s, op.beta = -1.0f;
      } else if (t == "Max") {
        op.alg = algorithm::eltwise_clip_v2, op.alpha = s, op.beta = FLT_MAX;
      } else if (t == "Min") {
        op.alg = algorithm::eltwise_clip_v2, op.alpha = -FLT_MAX, op.beta = s;
      } else if (t == "Pow" && x_first) {
        op.alg = algorithm::eltwise_pow, op.alpha = 1.0f, op.beta = s;
      } else {
        unsupported(node, "a constant base with a data exponent");
      }
      emit(node, std::move(op), out);
      return;
    }
    if (xd.size() == 4 && per_channel(c, xd) && (t == "Add" || t == "Sub" || t == "Mul" || (t == "Div" && x_first))) {
      const auto values = c.as_floats();
      const auto channels = static_cast<std::size_t>(xd[1]);
      op.kind = OpKind::ChannelAffine;
      op.scale.assign(channels, 1.0f);
      op.shift.assign(channels, 0.0f);
      for (std::size_t ch = 0; ch < channels; ++ch) {
        const float v = values[values.size() == 1 ? 0 : ch];
        if (t == "Add") op.shift[ch] = v;
        if (t == "Sub") x_first ? (op.shift[ch] = -v) : (op.scale[ch] = -1.0f, op.shift[ch] = v);
        if (t == "Mul") op.scale[ch] = v;
        if (t == "Div") op.scale[ch] = 1.0f / v;
      }
      emit(node, std::move(op), out);
      return;
    }
    if (!x_first && !commutative) unsupported(node, "a constant first operand of a non-commutative op");
    if (t == "Pow") unsupported(node, "an element-wise constant exponent");
    op.kind = OpKind::Binary;
    op.alg = algs.at(t);
    op.constant = c;
    emit(node, std::move(op), out);
  }

  void sum(const onnx::NodeProto& node) {
    IrOp op;
    op.kind = OpKind::Sum;
    for (int k = 0; k < node.input_size(); ++k) {
      op.in.push_back(rt(node, k));
      if (dims(op.in.back()) != dims(op.in.front())) unsupported(node, "inputs of different shapes");
    }
    const float s = node.op_type() == "Mean" ? 1.0f / static_cast<float>(node.input_size()) : 1.0f;
    op.sum_scales.assign(op.in.size(), s);
    const Dims out = dims(op.in.front());
    emit(node, std::move(op), out);
  }

  void concat(const onnx::NodeProto& node) {
    IrOp op;
    op.kind = OpKind::Concat;
    for (int k = 0; k < node.input_size(); ++k) op.in.push_back(rt(node, k));
    Dims out = dims(op.in.front());
    op.axis = onnx_graph::normalize_axis(onnx_graph::attr_int(node, "axis", 0), out.size(), node);
    out[static_cast<std::size_t>(op.axis)] = 0;
    for (int t : op.in) {
      const Dims& d = dims(t);
      if (d.size() != out.size()) unsupported(node, "inputs of different ranks");
      out[static_cast<std::size_t>(op.axis)] += d[static_cast<std::size_t>(op.axis)];
    }
    emit(node, std::move(op), out);
  }

  void add_slice(const onnx::NodeProto& node, int x, const Dims& offsets, const Dims& out, int output) {
    IrOp op;
    op.kind = OpKind::Slice;
    op.in = {x};
    op.ints = offsets;
    emit(node, std::move(op), out, output);
  }

  void split(const onnx::NodeProto& node) {
    const int x = rt(node, 0);
    const Dims& xd = dims(x);
    const int axis = onnx_graph::normalize_axis(onnx_graph::attr_int(node, "axis", 0), xd.size(), node);
    Dims sizes = onnx_graph::attr_ints(node, "split");
    if (const Tensor* s = optional_cst(node, 1)) sizes = s->as_ints();
    const auto n = static_cast<std::int64_t>(node.output_size());
    if (sizes.empty()) {
      if (xd[static_cast<std::size_t>(axis)] % n != 0) unsupported(node, "an uneven split without sizes");
      sizes.assign(static_cast<std::size_t>(n), xd[static_cast<std::size_t>(axis)] / n);
    }
    if (static_cast<std::int64_t>(sizes.size()) != n ||
        std::accumulate(sizes.begin(), sizes.end(), std::int64_t{0}) != xd[static_cast<std::size_t>(axis)]) {
      unsupported(node, "split sizes do not add up to the axis");
    }
    std::int64_t offset = 0;
    for (int k = 0; k < node.output_size(); ++k) {
      Dims offsets(xd.size(), 0), out = xd;
      offsets[static_cast<std::size_t>(axis)] = offset;
      out[static_cast<std::size_t>(axis)] = sizes[static_cast<std::size_t>(k)];
      add_slice(node, x, offsets, out, k);
      offset += sizes[static_cast<std::size_t>(k)];
    }
  }

  void slice(const onnx::NodeProto& node) {
    const int x = rt(node, 0);
    Dims starts, ends, axes, steps;
    if (opset_ < 10) {
      starts = onnx_graph::attr_ints(node, "starts");
      ends = onnx_graph::attr_ints(node, "ends");
      axes = onnx_graph::attr_ints(node, "axes");
    } else {
      starts = cst(node, 1).as_ints();
      ends = cst(node, 2).as_ints();
      if (const Tensor* a = optional_cst(node, 3)) axes = a->as_ints();
      if (const Tensor* s = optional_cst(node, 4)) steps = s->as_ints();
    }
    const auto r = onnx_graph::resolve_slice(dims(x), starts, ends, axes, steps, node);
    for (auto s : r.steps)
      if (s != 1) unsupported(node, "slices with a step other than 1");
    for (auto d : r.out_dims)
      if (d < 1) unsupported(node, "an empty slice");
    add_slice(node, x, r.starts, r.out_dims, 0);
  }

  void resize(const onnx::NodeProto& node) {
    const int x = rt(node, 0);
    const Dims& xd = dims(x);
    if (xd.size() != 4) unsupported(node, "only N x C x H x W inputs are resized");
    const bool upsample = node.op_type() == "Upsample";
    const std::string mode = onnx_graph::attr_string(node, "mode", "nearest");
    IrOp op;
    op.kind = OpKind::Resize;
    op.in = {x};
    kernels::ResizeParams& p = op.resize;
    if (mode == "nearest") {
      p.mode = kernels::ResizeMode::Nearest;
    } else if (mode == "linear" || mode == "bilinear") {
      p.mode = kernels::ResizeMode::Linear;
    } else {
      unsupported(node, fmt::format("mode '{}'", mode));
    }
    const bool modern = !upsample && opset_ >= 11;
    const std::string coord = modern ? onnx_graph::attr_string(node, "coordinate_transformation_mode", "half_pixel")
                                     : std::string("asymmetric");
    const std::map<std::string, kernels::CoordinateMode> coords{
        {"half_pixel", kernels::CoordinateMode::HalfPixel},
        {"pytorch_half_pixel", kernels::CoordinateMode::PytorchHalfPixel},
        {"align_corners", kernels::CoordinateMode::AlignCorners},
        {"asymmetric", kernels::CoordinateMode::Asymmetric},
        {"tf_half_pixel_for_nn", kernels::CoordinateMode::TfHalfPixelForNn}};
    auto cit = coords.find(coord);
    if (cit == coords.end()) unsupported(node, fmt::format("coordinate_transformation_mode '{}'", coord));
    p.coordinates = cit->second;
    const std::string nearest = modern ? onnx_graph::attr_string(node, "nearest_mode", "round_prefer_floor")
                                       : std::string("floor");
    const std::map<std::string, kernels::NearestRounding> roundings{
        {"round_prefer_floor", kernels::NearestRounding::RoundPreferFloor},
        {"round_prefer_ceil", kernels::NearestRounding::RoundPreferCeil},
        {"floor", kernels::NearestRounding::Floor},
        {"ceil", kernels::NearestRounding::Ceil}};
    auto rit = roundings.find(nearest);
    if (rit == roundings.end()) unsupported(node, fmt::format("nearest_mode '{}'", nearest));
    p.rounding = rit->second;
    if (onnx_graph::attr_int(node, "antialias", 0) != 0) unsupported(node, "antialias");
    if (onnx_graph::has_attr(node, "axes")) unsupported(node, "the axes attribute");
    std::vector<float> scales;
    Dims sizes;
    if (upsample) {
      scales = opset_ < 9 ? onnx_graph::attr_floats(node, "scales") : cst(node, 1).as_floats();
    } else if (opset_ < 11) {
      scales = cst(node, 1).as_floats();
    } else {
      if (const Tensor* s = optional_cst(node, 2); s && s->numel() > 0) scales = s->as_floats();
      if (const Tensor* s = optional_cst(node, 3); s && s->numel() > 0) sizes = s->as_ints();
    }
    Dims out = xd;
    if (!sizes.empty()) {
      if (sizes.size() != 4) unsupported(node, "sizes must have 4 entries");
      out = sizes;
    } else if (scales.size() == 4) {
      for (std::size_t k = 0; k < 4; ++k) {
        out[k] = static_cast<std::int64_t>(std::floor(static_cast<double>(xd[k]) * scales[k]));
      }
      p.scale_h = scales[2];
      p.scale_w = scales[3];
    } else {
      unsupported(node, "neither 4 scales nor 4 sizes");
    }
    if (out[0] != xd[0] || out[1] != xd[1]) unsupported(node, "resizing the batch or channel axis");
    if (out[2] < 1 || out[3] < 1 || out[2] > (1 << 16) || out[3] > (1 << 16)) {
      unsupported(node, fmt::format("an output of {} x {} pixels", out[2], out[3]));
    }
    emit(node, std::move(op), out);
  }

  void reshape(const onnx::NodeProto& node) {
    const int x = rt(node, 0);
    const Dims& xd = dims(x);
    const std::string& t = node.op_type();
    Dims out;
    if (t == "Reshape") {
      if (onnx_graph::attr_int(node, "allowzero", 0) != 0) unsupported(node, "allowzero");
      out = onnx_graph::reshape_dims(xd, cst(node, 1).as_ints(), node);
    } else if (t == "Flatten") {
      const int axis = onnx_graph::normalize_axis(onnx_graph::attr_int(node, "axis", 1), xd.size() + 1, node);
      std::int64_t outer = 1;
      for (int k = 0; k < axis; ++k) outer *= xd[static_cast<std::size_t>(k)];
      out = {outer, product(xd) / std::max<std::int64_t>(outer, 1)};
    } else {
      Dims axes = opset_ >= 13 ? (node.input_size() > 1 && !node.input(1).empty() ? cst(node, 1).as_ints() : Dims{})
                               : onnx_graph::attr_ints(node, "axes");
      out = xd;
      if (t == "Unsqueeze") {
        std::vector<int> norm;
        for (auto a : axes) norm.push_back(onnx_graph::normalize_axis(a, xd.size() + axes.size(), node));
        std::sort(norm.begin(), norm.end());
        for (int a : norm) out.insert(out.begin() + a, 1);
      } else {
        std::set<int> norm;
        for (auto a : axes) norm.insert(onnx_graph::normalize_axis(a, xd.size(), node));
        out.clear();
        for (std::size_t k = 0; k < xd.size(); ++k) {
          const bool drop = axes.empty() ? xd[k] == 1 : norm.count(static_cast<int>(k)) > 0;
          if (drop && xd[k] != 1) unsupported(node, "squeezing an axis that is not 1");
          if (!drop) out.push_back(xd[k]);
        }
      }
    }
    IrOp op;
    op.kind = OpKind::Reshape;
    op.in = {x};
    emit(node, std::move(op), out);
  }

  void transpose(const onnx::NodeProto& node) {
    const int x = rt(node, 0);
    const Dims& xd = dims(x);
    Dims perm = onnx_graph::attr_ints(node, "perm");
    if (perm.empty()) {
      for (int k = static_cast<int>(xd.size()) - 1; k >= 0; --k) perm.push_back(k);
    }
    if (perm.size() != xd.size()) unsupported(node, "perm does not match the rank");
    Dims out;
    std::set<std::int64_t> seen;
    for (auto p : perm) {
      if (p < 0 || p >= static_cast<std::int64_t>(xd.size()) || !seen.insert(p).second) unsupported(node, "a bad perm");
      out.push_back(xd[static_cast<std::size_t>(p)]);
    }
    IrOp op;
    op.kind = OpKind::Transpose;
    op.in = {x};
    op.ints = perm;
    emit(node, std::move(op), out);
  }

  void softmax(const onnx::NodeProto& node) {
    const int x = rt(node, 0);
    const Dims& xd = dims(x);
    IrOp op;
    op.kind = OpKind::Softmax;
    op.in = {x};
    op.flag = node.op_type() == "LogSoftmax";
    const std::int64_t axis_attr = onnx_graph::attr_int(node, "axis", opset_ >= 13 ? -1 : 1);
    op.axis = onnx_graph::normalize_axis(axis_attr, xd.size(), node);
    // Before opset 13 the op normalises over all axes from `axis` on (flattened).
    op.ints = {opset_ < 13 ? 1 : 0};
    emit(node, std::move(op), xd);
  }

  void reduce(const onnx::NodeProto& node) {
    const int x = rt(node, 0);
    const Dims& xd = dims(x);
    const std::string& t = node.op_type();
    const std::map<std::string, std::pair<algorithm, float>> algs{
        {"ReduceSum", {algorithm::reduction_sum, 0.0f}},
        {"ReduceMean", {algorithm::reduction_mean, 0.0f}},
        {"ReduceMax", {algorithm::reduction_max, 0.0f}},
        {"ReduceMin", {algorithm::reduction_min, 0.0f}},
        {"ReduceProd", {algorithm::reduction_mul, 0.0f}},
        {"ReduceL1", {algorithm::reduction_norm_lp_power_p_sum, 1.0f}},
        {"ReduceL2", {algorithm::reduction_norm_lp_sum, 2.0f}},
        {"ReduceSumSquare", {algorithm::reduction_norm_lp_power_p_sum, 2.0f}}};
    auto it = algs.find(t);
    if (it == algs.end()) unsupported(node, "this reduction");
    if (t == "ReduceL1") unsupported(node, "ReduceL1 (|x| is not applied by oneDNN's p-power sum)");
    Dims axes = onnx_graph::attr_ints(node, "axes");
    if (const Tensor* a = optional_cst(node, 1)) axes = a->as_ints();
    const bool keep = onnx_graph::attr_int(node, "keepdims", 1) != 0;
    if (axes.empty() && onnx_graph::attr_int(node, "noop_with_empty_axes", 0) != 0) {
      bind(node, 0, x);
      return;
    }
    std::set<int> norm;
    if (axes.empty()) {
      for (std::size_t k = 0; k < xd.size(); ++k) norm.insert(static_cast<int>(k));
    } else {
      for (auto a : axes) norm.insert(onnx_graph::normalize_axis(a, xd.size(), node));
    }
    IrOp op;
    op.kind = OpKind::Reduce;
    op.in = {x};
    op.alg = it->second.first;
    op.alpha = it->second.second;
    op.flag = keep;
    Dims out;
    for (std::size_t k = 0; k < xd.size(); ++k) {
      const bool reduced = norm.count(static_cast<int>(k)) > 0;
      op.ints.push_back(reduced ? 1 : xd[k]);  // the keepdims shape
      if (!reduced) out.push_back(xd[k]);
      else if (keep) out.push_back(1);
    }
    emit(node, std::move(op), out);
  }

  void matmul(const onnx::NodeProto& node) {
    const int a = rt(node, 0);
    IrOp op;
    op.kind = OpKind::MatMul;
    op.in = {a};
    Dims ad = dims(a), bd;
    if (is_runtime(node.input(1))) {
      op.in.push_back(rt(node, 1));
      bd = dims(op.in.back());
    } else {
      op.constant = cst(node, 1);
      bd = op.constant->dims;
    }
    if (ad.size() < 2 || bd.size() < 2) unsupported(node, "1-D operands");
    if (ad.back() != bd[bd.size() - 2]) unsupported(node, "inner dimensions differ");
    const Dims batch = onnx_graph::broadcast_dims(Dims(ad.begin(), ad.end() - 2), Dims(bd.begin(), bd.end() - 2), node);
    Dims out = batch;
    out.push_back(ad[ad.size() - 2]);
    out.push_back(bd.back());
    emit(node, std::move(op), out);
  }

  void gemm(const onnx::NodeProto& node) {
    const int a = rt(node, 0);
    const Dims& ad = dims(a);
    if (ad.size() != 2) unsupported(node, "A must be 2-D");
    if (onnx_graph::attr_int(node, "transA", 0) != 0) unsupported(node, "transA");
    Tensor b = cst(node, 1);
    if (b.dims.size() != 2) unsupported(node, "B must be 2-D");
    const float alpha = onnx_graph::attr_float(node, "alpha", 1.0f), beta = onnx_graph::attr_float(node, "beta", 1.0f);
    const bool trans_b = onnx_graph::attr_int(node, "transB", 0) != 0;
    const std::int64_t k = ad[1];
    const std::int64_t n = trans_b ? b.dims[0] : b.dims[1];
    if ((trans_b ? b.dims[1] : b.dims[0]) != k) unsupported(node, "inner dimensions differ");
    Tensor w = Tensor::floats(std::vector<float>(static_cast<std::size_t>(k * n)), {k, n});
    const auto bf = b.as_floats();
    for (std::int64_t r = 0; r < k; ++r) {
      for (std::int64_t c = 0; c < n; ++c) {
        w.f[static_cast<std::size_t>(r * n + c)] =
            alpha * bf[static_cast<std::size_t>(trans_b ? c * k + r : r * n + c)];
      }
    }
    IrOp op;
    op.kind = OpKind::MatMul;
    op.in = {a};
    op.constant = std::move(w);
    if (const Tensor* c = optional_cst(node, 2)) {
      const auto cv = c->as_floats();
      if (c->numel() == 1) {
        op.bias.assign(static_cast<std::size_t>(n), beta * cv[0]);
      } else if (c->numel() == n && (c->dims.size() == 1 || c->dims[0] == 1)) {
        for (float v : cv) op.bias.push_back(beta * v);
      } else {
        unsupported(node, "a C that is not a row vector");
      }
    }
    emit(node, std::move(op), {ad[0], n});
  }

  void pad(const onnx::NodeProto& node) {
    const int x = rt(node, 0);
    const Dims& xd = dims(x);
    const std::string mode = onnx_graph::attr_string(node, "mode", "constant");
    if (mode != "constant") unsupported(node, fmt::format("mode '{}'", mode));
    Dims pads = opset_ < 11 ? onnx_graph::attr_ints(node, "pads") : cst(node, 1).as_ints();
    float value = onnx_graph::attr_float(node, "value", 0.0f);
    if (opset_ >= 11) {
      if (const Tensor* v = optional_cst(node, 2); v && v->numel() > 0) value = static_cast<float>(v->value(0));
      if (node.input_size() > 3 && !node.input(3).empty()) unsupported(node, "the axes input");
    }
    if (pads.size() != 2 * xd.size()) unsupported(node, "pads do not match the rank");
    Dims out = xd;
    IrOp op;
    op.kind = OpKind::Pad;
    op.in = {x};
    for (std::size_t k = 0; k < xd.size(); ++k) {
      if (pads[k] < 0 || pads[k + xd.size()] < 0) unsupported(node, "negative pads (cropping)");
      out[k] += pads[k] + pads[k + xd.size()];
      op.ints.push_back(pads[k]);
    }
    op.pad_value = value;
    emit(node, std::move(op), out);
  }

  const onnx::GraphProto& graph_;
  int opset_;
  const std::unordered_map<std::string, Tensor>& initializers_;
  std::unordered_map<std::string, Tensor> folded_;
  std::unordered_map<std::string, int> runtime_;
  IrGraph g_;
};

// ---------------------------------------------------------------------------
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
  const Dims& dims(int t) const { return g_.tensors[static_cast<std::size_t>(t)].dims; }

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

// ---------------------------------------------------------------------------
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

struct PlanTensor {
  memory::desc md;
  int base = -1;       // storage owner when this tensor shares another one's buffer
  bool view = false;   // a second look at data that stays alive (reshape, slice), not a hand-over
};

struct Step {
  std::string what;
  dnnl::primitive prim;                           // a oneDNN primitive, or
  std::function<void(float* const*)> kernel;      // a blocked kernel over `kernel_tensors`
  std::vector<int> kernel_tensors;
  std::vector<std::pair<int, int>> tensor_args;   // dnnl arg -> plan tensor
  std::vector<std::pair<int, int>> const_args;    // dnnl arg -> constant
  bool scratchpad = false;
};

struct Plan {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  std::vector<PlanTensor> tensors;
  std::vector<memory> constants;
  std::vector<Step> steps;
  std::vector<int> buffer_of;            // per tensor (base tensors only; -1 = none)
  std::vector<std::size_t> buffer_bytes;
  std::size_t scratchpad_bytes = 0;
  int input = -1;                        // plan tensor bound to the caller's chip
  int output = -1;                       // plan tensor bound to the caller's output vector
  Dims input_dims, output_dims;
  std::size_t weight_bytes = 0;
  double flops = 0.0;  // 2 x multiply-adds of the convolutions and matrix products
};

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
  const memory::desc& md(int t) const { return plan_.tensors[static_cast<std::size_t>(t)].md; }

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
    int dst;
    if (op.sum_input >= 0) {
      // The sum post-op adds into what dst holds: y's values, in place when y dies here.
      const int y = get_as(op.sum_input, dst_md);
      if (writable(op.sum_input, y)) {
        dst = add_tensor(dst_md, y);
      } else {
        dst = add_tensor(dst_md);
        add_reorder(y, dst, "copy for residual sum");
      }
    } else {
      dst = add_tensor(dst_md);
    }
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
    int dst;
    if (op.sum_input >= 0) {
      // Accumulate into y's buffer (in place when y dies here, else into a copy).
      const int y = get_as(op.sum_input, dst_md);
      if (writable(op.sum_input, y)) {
        dst = add_tensor(dst_md, y);
      } else {
        dst = add_tensor(dst_md);
        add_reorder(y, dst, "copy for accumulation");
      }
    } else {
      dst = add_tensor(dst_md);
    }
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

// ---------------------------------------------------------------------------
// The shared, immutable side: parsed graph, converted initializers, plans per shape.

class CompiledModel {
 public:
  CompiledModel(const OnnxModel& model, const std::string& role) : origin_(model.origin), role_(role) {
    onnx::ModelProto proto;
    if (!proto.ParseFromString(model.bytes)) {
      throw InputError(fmt::format("{} '{}' is not a valid ONNX model", role, model.origin));
    }
    opset_ = model.contract.opset;
    input_name_ = model.contract.input_name;
    graph_ = std::move(*proto.mutable_graph());
    const std::string context = fmt::format("{} '{}'", role, model.origin);
    for (const auto& init : graph_.initializer()) initializers_[init.name()] = onnx_graph::tensor_from_proto(init, context);
    graph_.clear_initializer();  // the converted copies are what the engine reads
    static const std::set<std::string> known = {
        "Constant", "Identity", "Dropout", "Cast", "Shape", "Size", "Gather", "Unsqueeze", "Squeeze", "Concat",
        "Slice", "Reshape", "Flatten", "ConstantOfShape", "Range", "Floor", "Ceil", "Equal", "Less", "Greater",
        "Where", "Expand", "Not", "Neg", "Sqrt", "Abs", "Exp", "Log", "Reciprocal", "Relu", "LeakyRelu", "Sigmoid",
        "Tanh", "Elu", "HardSwish", "Mish", "Round", "Clip", "Conv", "ConvTranspose", "BatchNormalization",
        "InstanceNormalization", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Add", "Sub", "Mul",
        "Div", "Max", "Min", "Pow", "Sum", "Mean", "Split", "Resize", "Upsample", "Transpose", "Softmax",
        "LogSoftmax", "ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL2",
        "ReduceSumSquare", "MatMul", "Gemm", "Pad"};
    for (const auto& node : graph_.node()) {
      if (!known.count(node.op_type())) {
        throw UnsupportedModelError(fmt::format("{}: op '{}' ({}) is not implemented by the oneDNN engine", context,
                                                node.op_type(), onnx_graph::describe(node)));
      }
    }
  }

  std::shared_ptr<const Plan> plan_for(const Dims& input_dims) const {
    std::lock_guard<std::mutex> lock(mu_);
    if (auto it = plans_.find(input_dims); it != plans_.end()) return it->second;
    const std::string context = fmt::format("{} '{}'", role_, origin_);
    auto plan = std::make_shared<Plan>();
    try {
      IrGraph ir = Importer(graph_, opset_, initializers_, input_name_, input_dims).run();
      Fuser(ir).run();
      Lowering(ir, *plan).run();
    } catch (const UnsupportedModelError& e) {
      throw UnsupportedModelError(fmt::format("{}: {}", context, e.what()));
    } catch (const dnnl::error& e) {
      throw UnsupportedModelError(fmt::format("{}: oneDNN cannot build this graph for a {} input ({})", context,
                                              fmt::join(input_dims, "x"), e.what()));
    }
    plans_[input_dims] = plan;
    return plan;
  }

 private:
  std::string origin_, role_, input_name_;
  int opset_ = 0;
  onnx::GraphProto graph_;
  std::unordered_map<std::string, Tensor> initializers_;
  mutable std::mutex mu_;
  mutable std::map<Dims, std::shared_ptr<const Plan>> plans_;
};

// One compiled model per model content in the process, shared by every backend.
std::shared_ptr<const CompiledModel> shared_compiled_model(const OnnxModel& model, const std::string& role) {
  static std::mutex mu;
  static std::map<std::string, std::weak_ptr<const CompiledModel>> cache;
  const std::string key = model.sha256 + ":" + std::to_string(model.bytes.size());
  {
    std::lock_guard<std::mutex> lock(mu);
    if (auto it = cache.find(key); it != cache.end()) {
      if (auto alive = it->second.lock()) return alive;
    }
  }
  auto compiled = std::make_shared<const CompiledModel>(model, role);
  std::lock_guard<std::mutex> lock(mu);
  for (auto it = cache.begin(); it != cache.end();) it = it->second.expired() ? cache.erase(it) : std::next(it);
  cache[key] = compiled;
  return compiled;
}

// Per-backend state: the activation buffers and the memory objects bound to them.
class RunState {
 public:
  explicit RunState(std::shared_ptr<const Plan> plan) : plan_(std::move(plan)), stream_(plan_->engine) {
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

  ~RunState() {
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
    std::vector<float*> pointers;
    // NIMBUS_ONEDNN_PROFILE=1: time every step and print a table when the backend goes away.
    static const bool profiling = std::getenv("NIMBUS_ONEDNN_PROFILE") != nullptr;
    if (profiling) ++profiled_runs_;
    for (std::size_t k = 0; k < plan_->steps.size(); ++k) {
      const Step& s = plan_->steps[k];
      const auto start = profiling ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point{};
      if (s.kernel) {
        pointers.clear();
        for (int t : s.kernel_tensors) {
          pointers.push_back(static_cast<float*>(memories_[static_cast<std::size_t>(t)].get_data_handle()));
        }
        s.kernel(pointers.data());
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

 private:
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
};

// oneDNN (Debian's build) and the blocked kernels run on libgomp. omp_set_num_threads
// sets the calling thread's own team size (an OpenMP per-thread setting), so this
// changes nothing for other threads and is restored when the run ends.
extern "C" {
int omp_get_max_threads(void);
void omp_set_num_threads(int);
}

class ScopedThreads {
 public:
  explicit ScopedThreads(int threads) {
    if (threads > 0) {
      previous_ = omp_get_max_threads();
      omp_set_num_threads(threads);
    }
  }
  ~ScopedThreads() {
    if (previous_ > 0) omp_set_num_threads(previous_);
  }
  ScopedThreads(const ScopedThreads&) = delete;
  ScopedThreads& operator=(const ScopedThreads&) = delete;

 private:
  int previous_ = 0;
};

constexpr double kLightModelFlops = 1e9;

class OneDnnBackend final : public InferenceBackend {
 public:
  OneDnnBackend(OnnxModel model, std::string role, int threads)
      : model_(std::move(model)), role_(std::move(role)), threads_(threads),
        compiled_(shared_compiled_model(model_, role_)) {}

  const OnnxModel& model() const override { return model_; }
  const char* engine() const override { return "onednn"; }

  void prepare(int channels, int height, int width) override {
    const Dims dims{1, channels, height, width};
    if (plan_ && plan_->input_dims == dims) return;
    plan_ = compiled_->plan_for(dims);
    const Dims& out = plan_->output_dims;
    if (out.size() != 4 || out[0] != 1 || out[2] != height || out[3] != width) {
      throw InputError(fmt::format("{} '{}' returned shape {} for a 1x{}x{}x{} chip; Nimbus needs 1 x classes x {} x {} "
                                   "(same spatial size as the input)",
                                   role_, model_.origin, fmt::join(out, "x"), channels, height, width, height, width));
    }
    state_ = std::make_unique<RunState>(plan_);
  }

  int run(const float* input, int channels, int height, int width, std::vector<float>& output) override {
    prepare(channels, height, width);
    output.resize(static_cast<std::size_t>(product(plan_->output_dims)));
    // Light models (under kLightModelFlops per chip, e.g. the embedded spectral ones) run on
    // one thread unless told otherwise: their steps are too short to pay for a thread team's
    // barriers, and the other core is better spent reading the next chip.
    ScopedThreads threads(threads_ > 0 ? threads_ : (plan_->flops < kLightModelFlops ? 1 : 0));
    try {
      state_->execute(input, output.data());
    } catch (const dnnl::error& e) {
      throw InternalError(fmt::format("oneDNN failed running {} '{}': {}", role_, model_.origin, e.what()));
    }
    return static_cast<int>(plan_->output_dims[1]);
  }
  double flops() const override { return plan_ ? plan_->flops : 0.0; }

 private:
  OnnxModel model_;
  std::string role_;
  int threads_;
  std::shared_ptr<const CompiledModel> compiled_;
  std::shared_ptr<const Plan> plan_;
  std::unique_ptr<RunState> state_;
};

}  // namespace

std::unique_ptr<InferenceBackend> make_onednn_backend(const OnnxModel& model, const std::string& role, int threads) {
  return std::make_unique<OneDnnBackend>(model, role, threads);
}

std::string onednn_version() {
  const dnnl_version_t* v = dnnl_version();
  return fmt::format("{}.{}.{}", v->major, v->minor, v->patch);
}

}  // namespace nimbus
