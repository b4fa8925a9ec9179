#include "nimbus/inference/opencv_graph_fixes.h"

#include <cstdint>
#include <cstring>
#include <optional>
#include <set>
#include <unordered_map>

#include <fmt/format.h>
#include <onnx/onnx_pb.h>

#include "nimbus/core/error.h"

namespace nimbus {
namespace {

// Integer values of a constant tensor (initializer or Constant node output).
std::optional<std::vector<std::int64_t>> tensor_ints(const onnx::TensorProto& t) {
  std::vector<std::int64_t> values;
  if (t.data_type() == onnx::TensorProto::INT64) {
    if (t.int64_data_size() > 0) {
      values.assign(t.int64_data().begin(), t.int64_data().end());
    } else {
      const std::string& raw = t.raw_data();
      values.resize(raw.size() / sizeof(std::int64_t));
      std::memcpy(values.data(), raw.data(), values.size() * sizeof(std::int64_t));
    }
    return values;
  }
  if (t.data_type() == onnx::TensorProto::INT32) {
    if (t.int32_data_size() > 0) {
      values.assign(t.int32_data().begin(), t.int32_data().end());
    } else {
      const std::string& raw = t.raw_data();
      std::vector<std::int32_t> v32(raw.size() / sizeof(std::int32_t));
      std::memcpy(v32.data(), raw.data(), v32.size() * sizeof(std::int32_t));
      values.assign(v32.begin(), v32.end());
    }
    return values;
  }
  return std::nullopt;
}

class ConstantLookup {
 public:
  explicit ConstantLookup(const onnx::GraphProto& g) {
    for (const auto& init : g.initializer()) tensors_[init.name()] = &init;
    for (const auto& node : g.node()) {
      if (node.op_type() != "Constant" || node.output_size() != 1) continue;
      for (const auto& attr : node.attribute()) {
        if (attr.name() == "value" && attr.has_t()) tensors_[node.output(0)] = &attr.t();
      }
    }
  }
  std::optional<std::vector<std::int64_t>> ints(const std::string& name) const {
    auto it = tensors_.find(name);
    if (it == tensors_.end()) return std::nullopt;
    return tensor_ints(*it->second);
  }

 private:
  std::unordered_map<std::string, const onnx::TensorProto*> tensors_;
};

// Moves a constant second input into an INTS attribute, the form OpenCV 4.6
// reads. Split (opset >= 13) otherwise silently splits into equal parts;
// ReduceSum (opset >= 13) otherwise fails to import.
int move_constant_input_to_attribute(onnx::GraphProto& g, const std::string& op_type, const std::string& attr_name) {
  const ConstantLookup constants(g);
  int changed = 0;
  for (auto& node : *g.mutable_node()) {
    if (node.op_type() != op_type || node.input_size() != 2 || node.input(1).empty()) continue;
    const auto values = constants.ints(node.input(1));
    if (!values) continue;
    auto* attr = node.add_attribute();
    attr->set_name(attr_name);
    attr->set_type(onnx::AttributeProto::INTS);
    for (std::int64_t v : *values) attr->add_ints(v);
    node.mutable_input()->RemoveLast();
    ++changed;
  }
  return changed;
}

// OpenCV 4.6 cannot import Identity nodes fed by initializers (torch emits them
// when it de-duplicates equal weights). Rewire their consumers to the source.
int bypass_identity_nodes(onnx::GraphProto& g) {
  std::set<std::string> graph_outputs;
  for (const auto& o : g.output()) graph_outputs.insert(o.name());
  std::unordered_map<std::string, std::string> replacement;
  google::protobuf::RepeatedPtrField<onnx::NodeProto> kept;
  for (auto& node : *g.mutable_node()) {
    if (node.op_type() == "Identity" && node.input_size() == 1 && node.output_size() == 1 &&
        !graph_outputs.count(node.output(0))) {
      std::string source = node.input(0);
      if (auto it = replacement.find(source); it != replacement.end()) source = it->second;
      replacement[node.output(0)] = source;
      continue;
    }
    for (auto& in : *node.mutable_input()) {
      if (auto it = replacement.find(in); it != replacement.end()) in = it->second;
    }
    *kept.Add() = std::move(node);
  }
  const int removed = g.node_size() - kept.size();
  g.mutable_node()->Swap(&kept);
  return removed;
}

}  // namespace

OpenCvGraph fix_graph_for_opencv(const OnnxModel& source) {
  onnx::ModelProto model;
  if (!model.ParseFromString(source.bytes)) {
    throw InternalError(fmt::format("the validated graph of '{}' no longer parses", source.origin));
  }
  OpenCvGraph out;
  onnx::GraphProto& g = *model.mutable_graph();
  if (int n = move_constant_input_to_attribute(g, "Split", "split"))
    out.fixes.push_back(fmt::format("{} Split node(s): sizes input -> attribute", n));
  if (int n = move_constant_input_to_attribute(g, "ReduceSum", "axes"))
    out.fixes.push_back(fmt::format("{} ReduceSum node(s): axes input -> attribute", n));
  if (int n = bypass_identity_nodes(g)) out.fixes.push_back(fmt::format("{} Identity node(s) bypassed", n));
  if (out.fixes.empty()) {
    out.bytes = source.bytes;
  } else if (!model.SerializeToString(&out.bytes)) {
    throw InternalError(fmt::format("re-serialising the fixed graph of '{}' failed", source.origin));
  }
  return out;
}

}  // namespace nimbus
