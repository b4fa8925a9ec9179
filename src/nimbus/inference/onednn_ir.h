// The oneDNN engine's intermediate representation: the data path of an ONNX
// graph for one input shape, after constant folding (onednn_import.cpp) and the
// graph rewrites that let oneDNN fuse work (onednn_fusion.cpp). Private to the
// inference module.
#pragma once

#include <cstdint>
#include <functional>
#include <numeric>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include <oneapi/dnnl/dnnl.hpp>
#include <onnx/onnx_pb.h>

#include "nimbus/inference/blocked_kernels.h"
#include "nimbus/inference/onnx_graph.h"

namespace nimbus::onednn {

using dnnl::algorithm;
using onnx_graph::Tensor;
using Dims = std::vector<std::int64_t>;


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

inline std::int64_t product(const Dims& d) {
  return std::accumulate(d.begin(), d.end(), std::int64_t{1}, std::multiplies<>());
}

// The graph's data path for a 1 x C x H x W input: shape arithmetic folded,
// ops mapped to IR ops. Throws UnsupportedModelError naming the node otherwise.
IrGraph import_graph(const onnx::GraphProto& graph, int opset,
                     const std::unordered_map<std::string, Tensor>& initializers, const std::string& input_name,
                     const Dims& input_dims);

// Rewrites `graph` in place so more work fuses: BatchNormalization and per-channel
// affines into convolutions, GroupNorm and stack+sum patterns, residual sums and
// activations as post-ops, channel concats into accumulating convolutions.
void fuse(IrGraph& graph);

}  // namespace nimbus::onednn
