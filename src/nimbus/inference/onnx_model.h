// Loading ONNX model bytes and reading their input contract: the neutral part
// every engine shares. Engine-specific graph rewrites live with their engine
// (OpenCV DNN's in opencv_graph_fixes.h).
#pragma once

#include <string>

namespace nimbus {

// What the graph declares about its first (data) input.
struct OnnxInputContract {
  std::string input_name;
  int channels = 0;  // 0 when the dimension is symbolic
  int height = 0;    // 0 when symbolic
  int width = 0;     // 0 when symbolic
  int opset = 0;     // default-domain opset
};

// A parsed and validated model, exactly as given (no rewrite applied).
struct OnnxModel {
  std::string origin;  // file path, or "embedded:<name>" for built-in models
  std::string sha256;  // of `bytes`, lower-case hex
  OnnxInputContract contract;
  std::string bytes;  // the serialized model as read
};

// Reads and parses `path`. Throws InputError naming `role` when the file is
// missing, empty, a Git LFS pointer, or not a valid ONNX protobuf.
OnnxModel load_onnx_file(const std::string& path, const std::string& role);

// Same, for model bytes compiled into the binary.
OnnxModel load_onnx_bytes(const std::string& name, const std::string& bytes, const std::string& role);

// The two halves of load_onnx_file, for callers that hash the bytes before deciding
// to parse them (the model cache): the file's bytes (same checks and errors), and
// the model parsed from bytes read at `origin` (`sha256` of them, or empty to compute it).
std::string read_onnx_file(const std::string& path, const std::string& role);
OnnxModel parse_onnx_model(const std::string& origin, std::string bytes, std::string sha256, const std::string& role);


}  // namespace nimbus
