#include "nimbus/models/default_models.h"

#include <filesystem>

#include <fmt/format.h>

#include "nimbus/core/error.h"
#include "nimbus/core/input_files.h"

namespace nimbus {
namespace embedded {
extern const std::string nimbus_cloud_v1;
extern const std::string nimbus_cloud_v2;
extern const std::string nimbus_shadow_v1;
}  // namespace embedded

namespace {

// "embedded:a, embedded:b or embedded:c", for messages.
std::string embedded_refs_listed() {
  const auto& models = embedded_models();
  std::string out;
  for (std::size_t i = 0; i < models.size(); ++i) {
    if (i > 0) out += i + 1 == models.size() ? " or " : ", ";
    out += default_model_ref(models[i]);
  }
  return out;
}

}  // namespace

EmbeddedModel default_cloud_model() { return {"nimbus_cloud_v2", embedded::nimbus_cloud_v2}; }
EmbeddedModel default_shadow_model() { return {"nimbus_shadow_v1", embedded::nimbus_shadow_v1}; }

const std::vector<EmbeddedModel>& embedded_models() {
  static const std::vector<EmbeddedModel> models{default_cloud_model(),
                                                 {"nimbus_cloud_v1", embedded::nimbus_cloud_v1},
                                                 default_shadow_model()};
  return models;
}

std::string default_model_ref(const EmbeddedModel& model) { return std::string("embedded:") + model.name; }

std::shared_ptr<const LoadedModel> load_model(const std::string& model_path, const std::string& root_dir,
                                              const std::string& role, ModelLoadCounts* counts) {
  static constexpr char kEmbedded[] = "embedded:";
  if (model_path.rfind(kEmbedded, 0) == 0) {
    const std::string name = model_path.substr(sizeof(kEmbedded) - 1);
    for (const EmbeddedModel& m : embedded_models()) {
      if (name == m.name) return cached_model_bytes(m.name, m.onnx, role, counts);
    }
    throw InputError(fmt::format("{} '{}': no embedded model of that name; use {}, or a path to an .onnx file", role,
                                 model_path, embedded_refs_listed()));
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
                                 "`git lfs pull`) or {}",
                                 role, path.string(), embedded_refs_listed()));
  }
  return cached_model_file(path.string(), role, counts);
}

}  // namespace nimbus
