// InferenceBackend on oneDNN (CPU). The ONNX graph is imported once per model
// and compiled, per input shape, into a plan of oneDNN primitives in their
// preferred blocked layouts: BatchNormalization and per-channel Mul/Add folded
// into convolutions, activations and residual sums fused as post-ops, GroupNorm
// and Resize as blocked kernels, reorders only where a layout must change.
// The imported graph, prepared weights and plans are the loaded model's oneDNN
// form, shared by every backend on it (see loaded_model.h); each backend owns
// only its activation buffers.
#pragma once

#include <memory>
#include <string>

#include "nimbus/inference/backend.h"

namespace nimbus {

// Throws UnsupportedModelError (naming the op) when the graph uses an op the
// importer does not implement; shape-dependent checks happen in prepare().
std::unique_ptr<InferenceBackend> make_onednn_backend(std::shared_ptr<const LoadedModel> model, const std::string& role,
                                                      int threads);

}  // namespace nimbus
