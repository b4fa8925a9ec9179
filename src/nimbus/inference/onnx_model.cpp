#include "nimbus/inference/onnx_model.h"

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include <fmt/format.h>
#include <onnx/onnx_pb.h>

#include "nimbus/core/checksum.h"
#include "nimbus/core/error.h"
#include "nimbus/core/input_files.h"

namespace nimbus {
namespace {

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

OnnxModel parse_checked(const std::string& origin, std::string bytes, std::string sha256, const std::string& role) {
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
  out.sha256 = sha256.empty() ? sha256_hex(bytes) : std::move(sha256);
  out.contract = read_contract(model);
  if (out.contract.input_name.empty()) {
    throw InputError(fmt::format("{} '{}' declares no data input; export the model with an input tensor", role, origin));
  }
  out.bytes = std::move(bytes);
  return out;
}

}  // namespace

std::string read_onnx_file(const std::string& path, const std::string& role) {
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
  return buffer.str();
}

OnnxModel parse_onnx_model(const std::string& origin, std::string bytes, std::string sha256, const std::string& role) {
  return parse_checked(origin, std::move(bytes), std::move(sha256), role);
}

OnnxModel load_onnx_file(const std::string& path, const std::string& role) {
  return parse_checked(path, read_onnx_file(path, role), "", role);
}

OnnxModel load_onnx_bytes(const std::string& name, const std::string& bytes, const std::string& role) {
  return parse_checked("embedded:" + name, bytes, "", role);
}

}  // namespace nimbus
