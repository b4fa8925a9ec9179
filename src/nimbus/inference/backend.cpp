#include "nimbus/inference/backend.h"

#include <fmt/format.h>
#include <oneapi/dnnl/dnnl.hpp>
#include <opencv2/core/utility.hpp>

#include "nimbus/core/log.h"
#include "nimbus/inference/onednn_backend.h"
#include "nimbus/inference/opencv_backend.h"

namespace nimbus {
namespace {

// oneDNN first; the first time the graph turns out to need something the
// importer lacks (at load, or at prepare for a given chip shape), OpenCV DNN
// takes over for good, with one info line naming the op.
class AutoBackend final : public InferenceBackend {
 public:
  AutoBackend(std::shared_ptr<const LoadedModel> model, std::string role, int threads)
      : model_(std::move(model)), role_(std::move(role)), threads_(threads) {
    try {
      active_ = make_onednn_backend(model_, role_, threads_);
    } catch (const UnsupportedModelError& e) {
      fall_back(e);
    }
  }

  const OnnxModel& model() const override { return model_->onnx(); }
  const char* engine() const override { return active_->engine(); }
  std::vector<std::string> model_fixes() const override { return active_->model_fixes(); }

  void prepare(int channels, int height, int width) override {
    try {
      active_->prepare(channels, height, width);
    } catch (const UnsupportedModelError& e) {
      if (std::string(active_->engine()) == "opencv") throw;
      fall_back(e);
      active_->prepare(channels, height, width);
    }
  }

  int run(const float* input, int channels, int height, int width, std::vector<float>& output) override {
    prepare(channels, height, width);
    return active_->run(input, channels, height, width, output);
  }
  double flops() const override { return active_->flops(); }

 private:
  void fall_back(const UnsupportedModelError& e) {
    logger()->info("{}; running this model on OpenCV DNN instead", e.what());
    active_ = make_opencv_backend(model_, role_, threads_);
  }

  std::shared_ptr<const LoadedModel> model_;
  std::string role_;
  int threads_;
  std::unique_ptr<InferenceBackend> active_;
};

// --engine onednn: an unsupported graph is the user's to resolve, so say how.
class StrictOneDnnBackend final : public InferenceBackend {
 public:
  StrictOneDnnBackend(std::shared_ptr<const LoadedModel> model, const std::string& role, int threads) {
    try {
      inner_ = make_onednn_backend(std::move(model), role, threads);
    } catch (const UnsupportedModelError& e) {
      rethrow(e);
    }
  }
  const OnnxModel& model() const override { return inner_->model(); }
  const char* engine() const override { return inner_->engine(); }
  std::vector<std::string> model_fixes() const override { return inner_->model_fixes(); }
  void prepare(int channels, int height, int width) override {
    try {
      inner_->prepare(channels, height, width);
    } catch (const UnsupportedModelError& e) {
      rethrow(e);
    }
  }
  int run(const float* input, int channels, int height, int width, std::vector<float>& output) override {
    prepare(channels, height, width);
    return inner_->run(input, channels, height, width, output);
  }
  double flops() const override { return inner_->flops(); }

 private:
  [[noreturn]] static void rethrow(const UnsupportedModelError& e) {
    throw UnsupportedModelError(
        fmt::format("{}; choose the engine 'opencv' (or 'auto', which falls back by itself) for this model", e.what()));
  }
  std::unique_ptr<InferenceBackend> inner_;
};

}  // namespace

const char* engine_name(InferenceEngine engine) {
  switch (engine) {
    case InferenceEngine::Auto:
      return "auto";
    case InferenceEngine::OneDnn:
      return "onednn";
    case InferenceEngine::OpenCv:
      return "opencv";
  }
  return "auto";
}

std::string onednn_runtime_version() {
  const dnnl_version_t* v = dnnl_version();
  return fmt::format("{}.{}.{}", v->major, v->minor, v->patch);
}

std::string opencv_runtime_version() { return cv::getVersionString(); }

InferenceEngine parse_engine(const std::string& text, const std::string& option) {
  for (InferenceEngine e : {InferenceEngine::Auto, InferenceEngine::OneDnn, InferenceEngine::OpenCv}) {
    if (text == engine_name(e)) return e;
  }
  throw InputError(fmt::format("{} is '{}'; choose auto (oneDNN, falling back to OpenCV DNN), onednn or opencv",
                               option, text));
}

std::unique_ptr<InferenceBackend> make_backend(std::shared_ptr<const LoadedModel> model, const std::string& role,
                                               const BackendOptions& options) {
  if (!model) throw InternalError(fmt::format("no model given for {}", role));
  switch (options.engine) {
    case InferenceEngine::OpenCv:
      return make_opencv_backend(std::move(model), role, options.threads);
    case InferenceEngine::OneDnn:
      return std::make_unique<StrictOneDnnBackend>(std::move(model), role, options.threads);
    case InferenceEngine::Auto:
      break;
  }
  return std::make_unique<AutoBackend>(std::move(model), role, options.threads);
}

}  // namespace nimbus
