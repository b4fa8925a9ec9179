#include "nimbus/inference/opencv_backend.h"

#include <cstring>
#include <mutex>

#include <fmt/format.h>
#include <opencv2/core/utility.hpp>
#include <opencv2/dnn.hpp>

#include "nimbus/core/error.h"
#include "nimbus/inference/opencv_graph_fixes.h"

namespace nimbus {
namespace {

// OpenCV exceptions carry a multi-line "file:line: error: (-215) ..." text;
// keep the informative part on one line.
std::string one_line(const cv::Exception& e) {
  std::string msg = e.err.empty() ? e.what() : e.err;
  for (char& ch : msg) {
    if (ch == '\n') ch = ' ';
  }
  return msg;
}

// OpenCV's thread count is process-wide, and changing it re-creates OpenCV's worker
// pool (TBB here): doing that while another thread runs OpenCV work crashes. So the
// count is set when the first backend asking for one is created and the host's value
// put back when the last is destroyed: concurrent runs (Python threads, Dask) share one
// setting and never change it under each other, and nothing is lost (a per-chip save
// and restore let a run save another run's setting and "restore" it for good). A
// backend lives for one run, so the run's own merge/morphology work, which also uses
// OpenCV's pool, is inside the lease too.
class OpenCvThreadsLease {
 public:
  explicit OpenCvThreadsLease(int threads) : active_(threads > 0) {
    if (!active_) return;
    std::lock_guard<std::mutex> lock(mutex());
    State& s = state();
    if (s.holders++ == 0) {
      s.host_threads = cv::getNumThreads();
      if (threads != s.host_threads) cv::setNumThreads(threads);
    }
  }
  ~OpenCvThreadsLease() {
    if (!active_) return;
    std::lock_guard<std::mutex> lock(mutex());
    State& s = state();
    if (--s.holders == 0 && cv::getNumThreads() != s.host_threads) cv::setNumThreads(s.host_threads);
  }
  OpenCvThreadsLease(const OpenCvThreadsLease&) = delete;
  OpenCvThreadsLease& operator=(const OpenCvThreadsLease&) = delete;

 private:
  struct State {
    int holders = 0;
    int host_threads = 0;
  };
  static std::mutex& mutex() {
    static std::mutex m;
    return m;
  }
  static State& state() {
    static State s;
    return s;
  }
  bool active_;
};

class OpenCvBackend final : public InferenceBackend {
 public:
  OpenCvBackend(std::shared_ptr<const LoadedModel> model, std::string role, int threads);

  const OnnxModel& model() const override { return model_->onnx(); }
  const char* engine() const override { return "opencv"; }
  std::vector<std::string> model_fixes() const override { return graph_->fixes; }
  void prepare(int, int, int) override {}
  int run(const float* input, int channels, int height, int width, std::vector<float>& output) override;

 private:
  std::shared_ptr<const LoadedModel> model_;   // shared
  std::shared_ptr<const OpenCvGraph> graph_;   // shared: the rewritten graph
  std::string role_;
  OpenCvThreadsLease threads_;  // for the backend's life (one run)
  cv::dnn::Net net_;            // this backend's own
};

OpenCvBackend::OpenCvBackend(std::shared_ptr<const LoadedModel> model, std::string role, int threads)
    : model_(std::move(model)),
      graph_(model_->engine_form<OpenCvGraph>(
          "opencv", [this] { return std::make_shared<const OpenCvGraph>(fix_graph_for_opencv(model_->onnx())); })),
      role_(std::move(role)),
      threads_(threads) {
  try {
    net_ = cv::dnn::readNetFromONNX(graph_->bytes.data(), graph_->bytes.size());
  } catch (const cv::Exception& e) {
    throw InputError(fmt::format("{} '{}' cannot be imported by OpenCV DNN ({}); re-export it with "
                                 "torch.onnx.export(..., opset_version=11) and a 1x C x 512 x 512 input",
                                 role_, model_->onnx().origin, one_line(e)));
  }
  if (net_.empty()) {
    throw InputError(
        fmt::format("{} '{}' imported as an empty network; check the export", role_, model_->onnx().origin));
  }
  net_.setPreferableBackend(cv::dnn::DNN_BACKEND_OPENCV);
  net_.setPreferableTarget(cv::dnn::DNN_TARGET_CPU);
}

int OpenCvBackend::run(const float* input, int channels, int height, int width, std::vector<float>& output) {
  const int sizes[4] = {1, channels, height, width};
  cv::Mat blob(4, sizes, CV_32F, const_cast<float*>(input));
  cv::Mat result;
  try {
    net_.setInput(blob);
    result = net_.forward();
  } catch (const cv::Exception& e) {
    throw InputError(fmt::format("{} '{}' failed on a {}x{}x{} chip ({}); the model must take N x {} x H x W "
                                 "float32 and keep H x W",
                                 role_, model_->onnx().origin, channels, height, width, one_line(e), channels));
  }
  if (result.dims != 4 || result.size[0] != 1 || result.size[2] != height || result.size[3] != width) {
    std::string shape;
    for (int i = 0; i < result.dims; ++i) shape += (i ? "x" : "") + std::to_string(result.size[i]);
    throw InputError(fmt::format("{} '{}' returned shape {} for a 1x{}x{}x{} chip; Nimbus needs 1 x classes x {} x {} "
                                 "(same spatial size as the input)",
                                 role_, model_->onnx().origin, shape, channels, height, width, height, width));
  }
  if (!result.isContinuous()) result = result.clone();
  output.resize(result.total());
  std::memcpy(output.data(), result.ptr<float>(), result.total() * sizeof(float));
  return result.size[1];
}

}  // namespace

std::unique_ptr<InferenceBackend> make_opencv_backend(std::shared_ptr<const LoadedModel> model, const std::string& role,
                                                      int threads) {
  return std::make_unique<OpenCvBackend>(std::move(model), role, threads);
}

}  // namespace nimbus
