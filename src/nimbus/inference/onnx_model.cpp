#include "nimbus/inference/onnx_model.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>
#include <unordered_map>

#include <fmt/format.h>
#include <onnx/onnx_pb.h>

#include "nimbus/core/checksum.h"
#include "nimbus/core/error.h"
#include "nimbus/core/input_files.h"

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

OnnxInputContract read_contract(const onnx::ModelProto& model) {
  OnnxInputContract c;
  for (const auto& opset : model.opset_import()) {
    if (opset.domain().empty() || opset.domain() == "ai.onnx") c.opset = static_cast<int>(opset.version());
  }
  const auto& g = model.graph();
  std::set<std::string> initializers;
  for (const auto& init : g.initializer()) initializers.insert(init.name());
  for (const auto& input : g.input()) {
    if (initializers.count(input.name())) continue;
    c.input_name = input.name();
    const auto& shape = input.type().tensor_type().shape();
    const auto dim = [&](int i) {
      return (i < shape.dim_size() && shape.dim(i).has_dim_value()) ? static_cast<int>(shape.dim(i).dim_value()) : 0;
    };
    if (shape.dim_size() == 4) {
      c.channels = dim(1);
      c.height = dim(2);
      c.width = dim(3);
    }
    break;
  }
  return c;
}

// The first tensor (initializer, Constant value, or in a subgraph) whose data lives
// in an external file, or null. Backends would read such a tensor as empty (OpenCV
// divides by its size) or follow its location wherever it points (../../etc/passwd).
const onnx::TensorProto* find_external_tensor(const onnx::GraphProto& g) {
  const auto external = [](const onnx::TensorProto& t) {
    return t.data_location() == onnx::TensorProto::EXTERNAL || t.external_data_size() > 0;
  };
  for (const auto& init : g.initializer()) {
    if (external(init)) return &init;
  }
  for (const auto& sparse : g.sparse_initializer()) {
    if (external(sparse.values())) return &sparse.values();
    if (external(sparse.indices())) return &sparse.indices();
  }
  for (const auto& node : g.node()) {
    for (const auto& attr : node.attribute()) {
      if (attr.has_t() && external(attr.t())) return &attr.t();
      for (const auto& t : attr.tensors()) {
        if (external(t)) return &t;
      }
      if (attr.has_g()) {
        if (const auto* t = find_external_tensor(attr.g())) return t;
      }
      for (const auto& sub : attr.graphs()) {
        if (const auto* t = find_external_tensor(sub)) return t;
      }
    }
  }
  return nullptr;
}

OnnxModel parse_and_fix(const std::string& origin, const std::string& bytes, const std::string& role) {
  static constexpr char kLfsPointer[] = "version https://git-lfs";
  if (bytes.empty()) {
    throw InputError(fmt::format("{} '{}' is empty; re-download the model file", role, origin));
  }
  if (bytes.compare(0, sizeof(kLfsPointer) - 1, kLfsPointer) == 0) {
    throw InputError(fmt::format("{} '{}' is a Git LFS pointer, not the model; run `git lfs pull` in the FarmVibes "
                                 "checkout (or download the real .onnx) and point to that file",
                                 role, origin));
  }
  onnx::ModelProto model;
  if (!model.ParseFromString(bytes) || !model.has_graph() || model.graph().node_size() == 0) {
    throw InputError(fmt::format("{} '{}' is not a valid ONNX model (protobuf parse failed); check that the file is "
                                 "complete and is an .onnx export",
                                 role, origin));
  }
  if (const onnx::TensorProto* t = find_external_tensor(model.graph())) {
    std::string location = "?";
    for (const auto& entry : t->external_data()) {
      if (entry.key() == "location") location = entry.value();
    }
    throw InputError(fmt::format("{} '{}' keeps tensor '{}' in an external data file ('{}'); Nimbus loads only "
                                 "self-contained models: save it as one file, e.g. in Python "
                                 "onnx.save_model(onnx.load(path), out_path, save_as_external_data=False)",
                                 role, origin, t->name(), location));
  }
  OnnxModel out;
  out.origin = origin;
  out.sha256 = sha256_hex(bytes);
  out.contract = read_contract(model);
  if (out.contract.input_name.empty()) {
    throw InputError(fmt::format("{} '{}' declares no data input; export the model with an input tensor", role, origin));
  }
  onnx::GraphProto& g = *model.mutable_graph();
  if (int n = move_constant_input_to_attribute(g, "Split", "split"))
    out.fixes_applied.push_back(fmt::format("{} Split node(s): sizes input -> attribute", n));
  if (int n = move_constant_input_to_attribute(g, "ReduceSum", "axes"))
    out.fixes_applied.push_back(fmt::format("{} ReduceSum node(s): axes input -> attribute", n));
  if (int n = bypass_identity_nodes(g)) out.fixes_applied.push_back(fmt::format("{} Identity node(s) bypassed", n));
  if (out.fixes_applied.empty()) {
    out.bytes = bytes;
  } else if (!model.SerializeToString(&out.bytes)) {
    throw InternalError(fmt::format("re-serialising the fixed graph of '{}' failed", origin));
  }
  return out;
}

}  // namespace

OnnxModel load_onnx_file(const std::string& path, const std::string& role) {
  require_not_special_file(path, role);
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    throw InputError(fmt::format("{} '{}' is a directory; pass the .onnx model file", role, path));
  }
  // Protobuf messages are limited to 2 GiB: a larger file is not a loadable model.
  if (const auto size = std::filesystem::file_size(path, ec); !ec && size > (std::uintmax_t{2} << 30)) {
    throw InputError(fmt::format("{} '{}' is {} bytes, larger than an ONNX model can be (2 GiB); pass the model "
                                 "file",
                                 role, path, size));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw InputError(fmt::format("{} '{}' cannot be read (missing file or no permission); check the path", role, path));
  }
  std::ostringstream buffer;
  buffer << in.rdbuf();
  return parse_and_fix(path, buffer.str(), role);
}

OnnxModel load_onnx_bytes(const std::string& name, const std::string& bytes, const std::string& role) {
  return parse_and_fix("embedded:" + name, bytes, role);
}

}  // namespace nimbus
