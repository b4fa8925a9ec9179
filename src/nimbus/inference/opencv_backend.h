// InferenceBackend on OpenCV 4.6 DNN (CPU).
#pragma once

#include <opencv2/dnn.hpp>

#include "nimbus/inference/backend.h"

namespace nimbus {

class OpenCvBackend final : public InferenceBackend {
 public:
  // `role` names the option that supplied the model, for error messages.
  OpenCvBackend(OnnxModel model, std::string role);

  const OnnxModel& model() const override { return model_; }
  int run(const float* input, int channels, int height, int width, std::vector<float>& output) override;
  std::unique_ptr<InferenceBackend> clone() const override;

 private:
  OnnxModel model_;
  std::string role_;
  cv::dnn::Net net_;
};

}  // namespace nimbus
