// InferenceBackend on OpenCV 4.6 DNN (CPU), with the graph rewrites its ONNX
// importer needs (opencv_graph_fixes.h, see docs/inference.md). The rewritten
// graph is built once per loaded model and shared; each backend imports its own
// cv::dnn::Net from it, as a Net may not run two forward passes at once.
#pragma once

#include <memory>
#include <string>

#include "nimbus/inference/backend.h"

namespace nimbus {

// `role` names the option that supplied the model, for error messages; `threads`
// (0 = OpenCV's default) is applied around each run and restored afterwards.
std::unique_ptr<InferenceBackend> make_opencv_backend(std::shared_ptr<const LoadedModel> model, const std::string& role,
                                                      int threads);

}  // namespace nimbus
