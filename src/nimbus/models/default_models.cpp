#include "nimbus/models/default_models.h"

#include <filesystem>

#include <fmt/format.h>

#include "nimbus/core/error.h"
#include "nimbus/core/input_files.h"

namespace nimbus {
namespace embedded {
extern const std::string nimbus_cloud_v1;
extern const std::string nimbus_shadow_v1;
}  // namespace embedded

EmbeddedModel default_cloud_model() { return {"nimbus_cloud_v1", embedded::nimbus_cloud_v1}; }
EmbeddedModel default_shadow_model() { return {"nimbus_shadow_v1", embedded::nimbus_shadow_v1}; }

std::string default_model_ref(const EmbeddedModel& model) { return std::string("embedded:") + model.name; }

OnnxModel load_model(const std::string& model_path, const std::string& root_dir, const std::string& role) {
  static constexpr char kEmbedded[] = "embedded:";
  if (model_path.rfind(kEmbedded, 0) == 0) {
    const std::string name = model_path.substr(sizeof(kEmbedded) - 1);
    for (const EmbeddedModel& m : {default_cloud_model(), default_shadow_model()}) {
      if (name == m.name) return load_onnx_bytes(m.name, m.onnx, role);
    }
    throw InputError(fmt::format("{} '{}': no embedded model of that name; use embedded:nimbus_cloud_v1 or "
                                 "embedded:nimbus_shadow_v1, or a path to an .onnx file",
                                 role, model_path));
  }
  if (model_path.empty()) throw InputError(fmt::format("{} is empty; give a path to an .onnx file", role));
  const std::filesystem::path path =
      root_dir.empty() ? std::filesystem::path(model_path) : std::filesystem::path(root_dir) / model_path;
  require_not_special_file(path.string(), role);
  if (std::filesystem::is_directory(path)) {
    throw InputError(fmt::format("{} '{}' is a directory; pass the .onnx model file", role, path.string()));
  }
  if (!std::filesystem::is_regular_file(path)) {
    throw InputError(fmt::format("{} '{}' not found; pass the path of the .onnx file (FarmVibes models: "
                                 "op_resources/cloud_models/*.onnx and op_resources/shadow_models/shadow.onnx after "
                                 "`git lfs pull`) or embedded:nimbus_cloud_v1 / embedded:nimbus_shadow_v1",
                                 role, path.string()));
  }
  return load_onnx_file(path.string(), role);
}

}  // namespace nimbus
