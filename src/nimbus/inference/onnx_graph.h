// Backend-neutral reading of an ONNX graph: constant tensors, typed node
// attributes, and evaluation of the shape-arithmetic subgraphs torch exports
// (Shape -> Gather -> Unsqueeze -> Concat -> Resize sizes, ...) once the input
// shape is known, so an engine only sees the data path.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <onnx/onnx_pb.h>

namespace nimbus::onnx_graph {

// A tensor known before any chip is seen: an initializer, a Constant, or the
// result of folding constants. Floats and integers are kept apart because ONNX
// shape arithmetic is int64 while weights are float.
struct Tensor {
  bool is_int = false;
  std::vector<std::int64_t> dims;
  std::vector<float> f;          // values when !is_int
  std::vector<std::int64_t> i;   // values when is_int

  std::int64_t numel() const;
  double value(std::size_t k) const { return is_int ? static_cast<double>(i[k]) : static_cast<double>(f[k]); }
  std::vector<std::int64_t> as_ints() const;
  std::vector<float> as_floats() const;
  // Appends one value in the tensor's own element type.
  void push(double v);
  static Tensor ints(std::vector<std::int64_t> values, std::vector<std::int64_t> dims);
  static Tensor floats(std::vector<float> values, std::vector<std::int64_t> dims);
};

// Converts a TensorProto. Throws UnsupportedModelError for element types no
// engine here computes in (strings, complex, float16) and InputError for
// tensors stored outside the model file.
Tensor tensor_from_proto(const onnx::TensorProto& proto, const std::string& context);

std::int64_t attr_int(const onnx::NodeProto& node, const char* name, std::int64_t fallback);
float attr_float(const onnx::NodeProto& node, const char* name, float fallback);
std::string attr_string(const onnx::NodeProto& node, const char* name, const std::string& fallback);
std::vector<std::int64_t> attr_ints(const onnx::NodeProto& node, const char* name);
std::vector<float> attr_floats(const onnx::NodeProto& node, const char* name);
bool has_attr(const onnx::NodeProto& node, const char* name);
const onnx::TensorProto* attr_tensor(const onnx::NodeProto& node, const char* name);

// "Conv 'name'" for messages.
std::string describe(const onnx::NodeProto& node);

// Numpy-style broadcast of two shapes; throws UnsupportedModelError when they do not broadcast.
std::vector<std::int64_t> broadcast_dims(const std::vector<std::int64_t>& a, const std::vector<std::int64_t>& b,
                                         const onnx::NodeProto& node);

// Normalises a possibly negative axis for a tensor of `rank` dimensions.
int normalize_axis(std::int64_t axis, std::size_t rank, const onnx::NodeProto& node);

// Evaluates `node` whose inputs are all constant (an empty optional input is a
// null pointer). Returns false when the op is not one of the shape-arithmetic
// ops this evaluator folds; throws UnsupportedModelError on malformed inputs.
bool fold_constant(const onnx::NodeProto& node, int opset, const std::vector<const Tensor*>& inputs,
                   std::vector<Tensor>& outputs);

// The dims a Reshape produces (ONNX rules: 0 copies, -1 infers; allowzero=0).
std::vector<std::int64_t> reshape_dims(const std::vector<std::int64_t>& in, const std::vector<std::int64_t>& shape,
                                       const onnx::NodeProto& node);

// Slice parameters resolved against `dims` for each axis: start, end and step.
struct SliceRange {
  std::vector<std::int64_t> starts, ends, steps;  // one per dimension of the input
  std::vector<std::int64_t> out_dims;
};
SliceRange resolve_slice(const std::vector<std::int64_t>& dims, const std::vector<std::int64_t>& starts,
                         const std::vector<std::int64_t>& ends, const std::vector<std::int64_t>& axes,
                         const std::vector<std::int64_t>& steps, const onnx::NodeProto& node);

}  // namespace nimbus::onnx_graph
