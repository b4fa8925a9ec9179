#include "nimbus/inference/opencv_backend.h"

#include <cstring>

#include <fmt/format.h>

#include "nimbus/core/error.h"

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

}  // namespace

OpenCvBackend::OpenCvBackend(OnnxModel model, std::string role) : model_(std::move(model)), role_(std::move(role)) {
  try {
    net_ = cv::dnn::readNetFromONNX(model_.bytes.data(), model_.bytes.size());
  } catch (const cv::Exception& e) {
    throw InputError(fmt::format("{} '{}' cannot be imported by OpenCV DNN ({}); re-export it with "
                                 "torch.onnx.export(..., opset_version=11) and a 1x C x 512 x 512 input",
                                 role_, model_.origin, one_line(e)));
  }
  if (net_.empty()) {
    throw InputError(fmt::format("{} '{}' imported as an empty network; check the export", role_, model_.origin));
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
                                 role_, model_.origin, channels, height, width, one_line(e), channels));
  }
  if (result.dims != 4 || result.size[0] != 1 || result.size[2] != height || result.size[3] != width) {
    std::string shape;
    for (int i = 0; i < result.dims; ++i) shape += (i ? "x" : "") + std::to_string(result.size[i]);
    throw InputError(fmt::format("{} '{}' returned shape {} for a 1x{}x{}x{} chip; Nimbus needs 1 x classes x {} x {} "
                                 "(same spatial size as the input)",
                                 role_, model_.origin, shape, channels, height, width, height, width));
  }
  if (!result.isContinuous()) result = result.clone();
  output.resize(result.total());
  std::memcpy(output.data(), result.ptr<float>(), result.total() * sizeof(float));
  return result.size[1];
}

std::unique_ptr<InferenceBackend> OpenCvBackend::clone() const {
  return std::make_unique<OpenCvBackend>(model_, role_);
}

std::unique_ptr<InferenceBackend> make_backend(const OnnxModel& model, const std::string& role) {
  return std::make_unique<OpenCvBackend>(model, role);
}

}  // namespace nimbus
