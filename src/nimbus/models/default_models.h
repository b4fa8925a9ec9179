// Nimbus' own default cloud and shadow models, compiled into the binary
// (built by models/make_default_models.py; see docs/models.md).
#pragma once

#include <string>

namespace nimbus {

struct EmbeddedModel {
  const char* name;         // e.g. "nimbus_cloud_v1"
  const std::string& onnx;  // serialized ONNX bytes
};

EmbeddedModel default_cloud_model();
EmbeddedModel default_shadow_model();

}  // namespace nimbus
