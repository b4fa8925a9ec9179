// The ONNX graph rewrites OpenCV 4.6's importer needs (see docs/inference.md).
// They are OpenCV workarounds: the oneDNN engine reads the graph as given, so
// they are applied only when a model runs on OpenCV DNN.
#pragma once

#include <string>
#include <vector>

#include "nimbus/inference/onnx_model.h"

namespace nimbus {

struct OpenCvGraph {
  std::string bytes;               // the serialized graph OpenCV imports (the original when nothing was rewritten)
  std::vector<std::string> fixes;  // human-readable, one per kind of rewrite applied
};

// Moves constant Split sizes and ReduceSum axes inputs into attributes (opset >= 13
// forms OpenCV 4.6 misreads) and bypasses Identity nodes (which it cannot import).
OpenCvGraph fix_graph_for_opencv(const OnnxModel& model);

}  // namespace nimbus
