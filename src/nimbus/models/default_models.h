// Nimbus' own default cloud and shadow models, compiled into the binary
// (built by models/make_default_models.py; see docs/models.md).
#pragma once

#include <string>
#include <vector>

#include "nimbus/inference/model_cache.h"

namespace nimbus {

struct EmbeddedModel {
  const char* name;         // e.g. "nimbus_cloud_v2"
  const std::string& onnx;  // serialized ONNX bytes
};

// The defaults: nimbus_cloud_v2 and nimbus_shadow_v1.
EmbeddedModel default_cloud_model();
EmbeddedModel default_shadow_model();

// Every embedded model, defaults and older versions kept for reproducibility
// (nimbus_cloud_v1), in the order they are listed in messages.
const std::vector<EmbeddedModel>& embedded_models();

// "embedded:<name>", the model reference that selects an embedded model.
std::string default_model_ref(const EmbeddedModel& model);

// Loads a model reference: "embedded:<name>" for a built-in model, an absolute
// path, or a path relative to `root_dir` (os.path.join semantics: an absolute
// model_path ignores root_dir). `role` names the option for errors. The model
// comes from the process's model cache (model_cache.h): loaded once, shared by
// every run; `counts` (may be null) says whether this call loaded or reused it.
std::shared_ptr<const LoadedModel> load_model(const std::string& model_path, const std::string& root_dir,
                                              const std::string& role, ModelLoadCounts* counts = nullptr);

}  // namespace nimbus
