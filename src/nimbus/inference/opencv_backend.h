// InferenceBackend on OpenCV 4.6 DNN (CPU), with the graph rewrites its ONNX
// importer needs (done by the loader, see docs/inference.md).
#pragma once

#include <memory>
#include <string>

#include "nimbus/inference/backend.h"

namespace nimbus {

// `role` names the option that supplied the model, for error messages; `threads`
// (0 = OpenCV's default) is applied around each run and restored afterwards.
std::unique_ptr<InferenceBackend> make_opencv_backend(const OnnxModel& model, const std::string& role, int threads);

}  // namespace nimbus
