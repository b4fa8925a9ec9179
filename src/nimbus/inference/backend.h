// The inference backend interface: one chip in, per-pixel class scores out.
// Two engines implement it: oneDNN (the default, src/nimbus/inference/onednn_*)
// and OpenCV DNN (the fallback for graphs the oneDNN importer does not cover).
//
// A backend is the PER-RUN half of the model/state split: it keeps a shared
// LoadedModel (loaded_model.h, one per model per process) and owns what one run
// mutates (oneDNN activation buffers, an OpenCV cv::dnn::Net). Create one per
// run and per thread; never call one backend from two threads at once.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "nimbus/core/error.h"
#include "nimbus/inference/loaded_model.h"

namespace nimbus {

// The model uses an op, attribute or shape an engine does not implement. An
// InputError (the user can pick another engine or re-export the model), and
// the signal for `--engine auto` to fall back to OpenCV DNN.
class UnsupportedModelError : public InputError {
 public:
  using InputError::InputError;
};

enum class InferenceEngine {
  Auto,    // oneDNN, falling back to OpenCV DNN (with one info line) when the graph needs it
  OneDnn,  // oneDNN only: an unsupported graph is an error
  OpenCv,  // OpenCV 4.6 DNN only
};

// "auto", "onednn", "opencv".
const char* engine_name(InferenceEngine engine);

// The engines' library versions as linked at run time, e.g. "3.0.0" and "4.6.0".
std::string onednn_runtime_version();
std::string opencv_runtime_version();
// Parses an engine name; throws InputError naming `option` and the choices.
InferenceEngine parse_engine(const std::string& text, const std::string& option);

struct BackendOptions {
  InferenceEngine engine = InferenceEngine::Auto;
  // Inference threads for this backend's runs (0 = the engine's default, all cores).
  // Applied around each run and restored afterwards.
  int threads = 0;
};

class InferenceBackend {
 public:
  virtual ~InferenceBackend() = default;

  // The model as loaded: origin, hash and declared input contract.
  virtual const OnnxModel& model() const = 0;

  // The graph rewrites the engine that runs the model applied (one line each;
  // final after prepare()). Empty when it reads the graph as given.
  virtual std::vector<std::string> model_fixes() const { return {}; }

  // The engine that runs the model ("onednn" or "opencv"); final after prepare().
  virtual const char* engine() const = 0;

  // Readies the backend for chips of channels x height x width (batch 1):
  // compiles what depends on the shape, before any pixel is read. Throws
  // InputError naming the model when the graph cannot run at that shape.
  virtual void prepare(int channels, int height, int width) = 0;

  // Runs one chip (batch 1): `input` is [channels, height, width] float32.
  // Fills `output` with [out_channels, height, width] and returns out_channels.
  // Throws InputError naming the model when the graph cannot run on this input
  // or returns a spatial size different from the input's.
  virtual int run(const float* input, int channels, int height, int width, std::vector<float>& output) = 0;

  // Multiply-add FLOPs (2 x MACs of convolutions and matrix products) of one run at
  // the prepared shape, where the engine counts them; 0 otherwise.
  virtual double flops() const { return 0.0; }
};

// Builds a per-run backend on `options.engine` for a shared loaded model; `role`
// names the option that supplied the model, for error messages. Cheap when the
// engine's compiled form of the model is already built (see LoadedModel).
std::unique_ptr<InferenceBackend> make_backend(std::shared_ptr<const LoadedModel> model, const std::string& role,
                                               const BackendOptions& options = {});

}  // namespace nimbus
