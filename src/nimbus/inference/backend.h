// The inference backend interface: one chip in, per-pixel class scores out.
// OpenCV DNN implements it today; ONNX Runtime can be added behind it later.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "nimbus/inference/onnx_model.h"

namespace nimbus {

class InferenceBackend {
 public:
  virtual ~InferenceBackend() = default;

  // The model as loaded: origin, hash and declared input contract.
  virtual const OnnxModel& model() const = 0;

  // Runs one chip (batch 1): `input` is [channels, height, width] float32.
  // Fills `output` with [out_channels, height, width] and returns out_channels.
  // Throws InputError naming the model when the graph cannot run on this input
  // or returns a spatial size different from the input's.
  virtual int run(const float* input, int channels, int height, int width, std::vector<float>& output) = 0;

  // A fresh backend on the same model, for use from another thread
  // (backends are not thread-safe).
  virtual std::unique_ptr<InferenceBackend> clone() const = 0;
};

// Builds the default backend (OpenCV DNN) for an already loaded model.
std::unique_ptr<InferenceBackend> make_backend(const OnnxModel& model, const std::string& role);

}  // namespace nimbus
