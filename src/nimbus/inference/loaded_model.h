// A loaded model: the SHARED half of the model/state split. One LoadedModel per
// model per process (see model_cache.h), immutable once built and safe to use
// from any number of threads and runs at once. It holds the parsed, validated
// ONNX model and, per engine, the compiled form built from it on first use
// (oneDNN: imported graph, converted weights, plans per input shape; OpenCV
// DNN: the rewritten graph bytes). The PER-RUN half is an InferenceBackend
// (backend.h): activation buffers, a oneDNN RunState, an OpenCV cv::dnn::Net.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>

#include "nimbus/inference/onnx_model.h"

namespace nimbus {

class LoadedModel {
 public:
  explicit LoadedModel(OnnxModel model) : onnx_(std::move(model)) {}
  LoadedModel(const LoadedModel&) = delete;
  LoadedModel& operator=(const LoadedModel&) = delete;

  // Origin, sha256, input contract and the bytes as read.
  const OnnxModel& onnx() const { return onnx_; }

  // The form `engine` compiles this model into, built by `build` the first time
  // it is asked for and shared from then on. A build that throws stores nothing
  // (the next call builds again). Forms must be immutable or internally locked.
  template <class Form>
  std::shared_ptr<const Form> engine_form(const std::string& engine,
                                          const std::function<std::shared_ptr<const Form>()>& build) const {
    std::lock_guard<std::mutex> lock(forms_mutex_);
    auto it = forms_.find(engine);
    if (it == forms_.end()) it = forms_.emplace(engine, std::shared_ptr<const void>(build())).first;
    return std::static_pointer_cast<const Form>(it->second);
  }

 private:
  const OnnxModel onnx_;
  mutable std::mutex forms_mutex_;
  mutable std::map<std::string, std::shared_ptr<const void>> forms_;  // engine name -> its Form
};

}  // namespace nimbus
