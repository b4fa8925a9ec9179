// Loading ONNX model bytes, reading their input contract, and rewriting the
// graph patterns OpenCV 4.6's importer mishandles (see docs/inference.md).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace nimbus {

// What the graph declares about its first (data) input.
struct OnnxInputContract {
  std::string input_name;
  int channels = 0;  // 0 when the dimension is symbolic
  int height = 0;    // 0 when symbolic
  int width = 0;     // 0 when symbolic
  int opset = 0;     // default-domain opset
};

struct OnnxModel {
  std::string origin;  // file path, or "embedded:<name>" for built-in models
  std::string sha256;  // of the original bytes, lower-case hex
  OnnxInputContract contract;
  std::vector<std::string> fixes_applied;  // human-readable, one per rewrite
  std::string bytes;                       // the (possibly rewritten) serialized model
};

// Reads and parses `path`. Throws InputError naming `role` when the file is
// missing, empty, a Git LFS pointer, or not a valid ONNX protobuf.
OnnxModel load_onnx_file(const std::string& path, const std::string& role);

// Same, for model bytes compiled into the binary.
OnnxModel load_onnx_bytes(const std::string& name, const std::string& bytes, const std::string& role);


}  // namespace nimbus
