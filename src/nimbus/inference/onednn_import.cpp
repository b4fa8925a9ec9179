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
  // By value: adding tensors may move the vector under a reference.
  Dims dims(int t) const { return g_.tensors[static_cast<std::size_t>(t)].dims; }

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
    p.coordinates = named(node, "coordinate_transformation_mode", coord,
                          std::map<std::string, kernels::CoordinateMode>{
                              {"half_pixel", kernels::CoordinateMode::HalfPixel},
                              {"pytorch_half_pixel", kernels::CoordinateMode::PytorchHalfPixel},
                              {"align_corners", kernels::CoordinateMode::AlignCorners},
                              {"asymmetric", kernels::CoordinateMode::Asymmetric},
                              {"tf_half_pixel_for_nn", kernels::CoordinateMode::TfHalfPixelForNn}});
    const std::string nearest = modern ? onnx_graph::attr_string(node, "nearest_mode", "round_prefer_floor")
                                       : std::string("floor");
    p.rounding = named(node, "nearest_mode", nearest,
                       std::map<std::string, kernels::NearestRounding>{
                           {"round_prefer_floor", kernels::NearestRounding::RoundPreferFloor},
                           {"round_prefer_ceil", kernels::NearestRounding::RoundPreferCeil},
                           {"floor", kernels::NearestRounding::Floor},
                           {"ceil", kernels::NearestRounding::Ceil}});
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

  // The enum value an attribute's text names; unsupported otherwise.
  template <typename E>
  E named(const onnx::NodeProto& node, const char* attribute, const std::string& value,
          const std::map<std::string, E>& choices) const {
    const auto it = choices.find(value);
    if (it == choices.end()) unsupported(node, fmt::format("{} '{}'", attribute, value));
    return it->second;
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

}  // namespace

IrGraph import_graph(const onnx::GraphProto& graph, int opset,
                     const std::unordered_map<std::string, Tensor>& initializers, const std::string& input_name,
                     const Dims& input_dims) {
  return Importer(graph, opset, initializers, input_name, input_dims).run();
}

}  // namespace nimbus::onednn
