#include "nimbus/inference/onednn_backend.h"

#include <cstdlib>
#include <map>
#include <mutex>
#include <set>
#include <unordered_map>

#include <fmt/format.h>
#include <oneapi/dnnl/dnnl.hpp>
#include <onnx/onnx_pb.h>

#include "nimbus/inference/onednn_ir.h"
#include "nimbus/inference/onednn_plan.h"
#include "nimbus/inference/onnx_graph.h"

namespace nimbus {
namespace {

using onednn::Dims;
using onednn::product;
using onednn::Plan;
using onednn::RunState;
using onnx_graph::Tensor;

// The shared, immutable side: parsed graph, converted initializers, plans per shape.
// Built once per LoadedModel (its "onednn" engine form) and used by every backend on it.

class CompiledModel {
 public:
  // Throws UnsupportedModelError naming the model ("<role> '<origin>': ...")
  // when the graph uses an op or tensor the importer does not implement.
  CompiledModel(const OnnxModel& model, const std::string& role) {
    onnx::ModelProto proto;
    if (!proto.ParseFromString(model.bytes)) {
      throw InputError(fmt::format("{} '{}' is not a valid ONNX model", role, model.origin));
    }
    opset_ = model.contract.opset;
    input_name_ = model.contract.input_name;
    graph_ = std::move(*proto.mutable_graph());
    const std::string context = fmt::format("{} '{}'", role, model.origin);
    for (const auto& init : graph_.initializer()) initializers_[init.name()] = onnx_graph::tensor_from_proto(init, context);
    graph_.clear_initializer();  // the converted copies are what the engine reads
    static const std::set<std::string> known = {
        "Constant", "Identity", "Dropout", "Cast", "Shape", "Size", "Gather", "Unsqueeze", "Squeeze", "Concat",
        "Slice", "Reshape", "Flatten", "ConstantOfShape", "Range", "Floor", "Ceil", "Equal", "Less", "Greater",
        "Where", "Expand", "Not", "Neg", "Sqrt", "Abs", "Exp", "Log", "Reciprocal", "Relu", "LeakyRelu", "Sigmoid",
        "Tanh", "Elu", "HardSwish", "Mish", "Round", "Clip", "Conv", "ConvTranspose", "BatchNormalization",
        "InstanceNormalization", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Add", "Sub", "Mul",
        "Div", "Max", "Min", "Pow", "Sum", "Mean", "Split", "Resize", "Upsample", "Transpose", "Softmax",
        "LogSoftmax", "ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL2",
        "ReduceSumSquare", "MatMul", "Gemm", "Pad"};
    for (const auto& node : graph_.node()) {
      if (!known.count(node.op_type())) {
        throw UnsupportedModelError(fmt::format("{}: op '{}' ({}) is not implemented by the oneDNN engine", context,
                                                node.op_type(), onnx_graph::describe(node)));
      }
    }
  }

  // The plan for one input shape, compiled on first use; `context` names the
  // model for errors ("<role> '<origin>'").
  std::shared_ptr<const Plan> plan_for(const Dims& input_dims, const std::string& context) const {
    std::lock_guard<std::mutex> lock(mu_);
    if (auto it = plans_.find(input_dims); it != plans_.end()) return it->second;
    auto plan = std::make_shared<Plan>();
    try {
      onednn::IrGraph ir = onednn::import_graph(graph_, opset_, initializers_, input_name_, input_dims);
      onednn::fuse(ir);
      onednn::lower(ir, *plan);
    } catch (const UnsupportedModelError& e) {
      throw UnsupportedModelError(fmt::format("{}: {}", context, e.what()));
    } catch (const dnnl::error& e) {
      throw UnsupportedModelError(fmt::format("{}: oneDNN cannot build this graph for a {} input ({})", context,
                                              fmt::join(input_dims, "x"), e.what()));
    }
    plans_[input_dims] = plan;
    return plan;
  }

 private:
  std::string input_name_;
  int opset_ = 0;
  onnx::GraphProto graph_;
  std::unordered_map<std::string, Tensor> initializers_;
  mutable std::mutex mu_;
  mutable std::map<Dims, std::shared_ptr<const Plan>> plans_;
};

// The oneDNN engine form of a loaded model: the compiled model, or why the
// importer cannot take the graph (kept too, so `--engine auto` does not retry
// the import for every scene of a batch before falling back).
struct OneDnnForm {
  std::shared_ptr<const CompiledModel> compiled;
  std::string unsupported;  // set when compiled is null: the reason, without the model's name
};

std::shared_ptr<const CompiledModel> compiled_model(const LoadedModel& model, const std::string& role) {
  const std::string context = fmt::format("{} '{}'", role, model.onnx().origin);
  const auto form = model.engine_form<OneDnnForm>("onednn", [&] {
    auto f = std::make_shared<OneDnnForm>();
    try {
      f->compiled = std::make_shared<const CompiledModel>(model.onnx(), role);
    } catch (const UnsupportedModelError& e) {
      // Kept without the first caller's role: later callers may supply the model for another option.
      const std::string what = e.what();
      f->unsupported = what.rfind(context + ": ", 0) == 0 ? what.substr(context.size() + 2) : what;
    }
    return std::shared_ptr<const OneDnnForm>(std::move(f));
  });
  if (!form->compiled) throw UnsupportedModelError(fmt::format("{}: {}", context, form->unsupported));
  return form->compiled;
}

// oneDNN (Debian's build) and the blocked kernels run on libgomp. omp_set_num_threads
// sets the calling thread's own team size (an OpenMP per-thread setting), so this
// changes nothing for other threads and is restored when the run ends.
extern "C" {
int omp_get_max_threads(void);
void omp_set_num_threads(int);
}

class ScopedThreads {
 public:
  explicit ScopedThreads(int threads) {
    if (threads > 0) {
      previous_ = omp_get_max_threads();
      omp_set_num_threads(threads);
    }
  }
  ~ScopedThreads() {
    if (previous_ > 0) omp_set_num_threads(previous_);
  }
  ScopedThreads(const ScopedThreads&) = delete;
  ScopedThreads& operator=(const ScopedThreads&) = delete;

 private:
  int previous_ = 0;
};

constexpr double kLightModelFlops = 1e9;

class OneDnnBackend final : public InferenceBackend {
 public:
  OneDnnBackend(std::shared_ptr<const LoadedModel> model, std::string role, int threads)
      : model_(std::move(model)), role_(std::move(role)), threads_(threads),
        compiled_(compiled_model(*model_, role_)) {}

  const OnnxModel& model() const override { return model_->onnx(); }
  const char* engine() const override { return "onednn"; }

  void prepare(int channels, int height, int width) override {
    const Dims dims{1, channels, height, width};
    if (plan_ && plan_->input_dims == dims) return;
    plan_ = compiled_->plan_for(dims, fmt::format("{} '{}'", role_, model_->onnx().origin));
    const Dims& out = plan_->output_dims;
    if (out.size() != 4 || out[0] != 1 || out[2] != height || out[3] != width) {
      throw InputError(fmt::format("{} '{}' returned shape {} for a 1x{}x{}x{} chip; Nimbus needs 1 x classes x {} x {} "
                                   "(same spatial size as the input)",
                                   role_, model_->onnx().origin, fmt::join(out, "x"), channels, height, width, height,
                                   width));
    }
    state_ = std::make_unique<RunState>(plan_);
  }

  int run(const float* input, int channels, int height, int width, std::vector<float>& output) override {
    prepare(channels, height, width);
    output.resize(static_cast<std::size_t>(product(plan_->output_dims)));
    // Light models (under kLightModelFlops per chip, e.g. the embedded spectral ones) run on
    // one thread unless told otherwise: their steps are too short to pay for a thread team's
    // barriers, and the other core is better spent reading the next chip.
    ScopedThreads threads(threads_ > 0 ? threads_ : (plan_->flops < kLightModelFlops ? 1 : 0));
    try {
      state_->execute(input, output.data());
    } catch (const dnnl::error& e) {
      throw InternalError(fmt::format("oneDNN failed running {} '{}': {}", role_, model_->onnx().origin, e.what()));
    }
    return static_cast<int>(plan_->output_dims[1]);
  }
  double flops() const override { return plan_ ? plan_->flops : 0.0; }

 private:
  std::shared_ptr<const LoadedModel> model_;        // shared
  std::string role_;
  int threads_;
  std::shared_ptr<const CompiledModel> compiled_;  // shared (the model's oneDNN form)
  std::shared_ptr<const Plan> plan_;               // shared (one per shape)
  std::unique_ptr<RunState> state_;                // this backend's own: activation buffers
};
}  // namespace

std::unique_ptr<InferenceBackend> make_onednn_backend(std::shared_ptr<const LoadedModel> model, const std::string& role,
                                                      int threads) {
  return std::make_unique<OneDnnBackend>(std::move(model), role, threads);
}

}  // namespace nimbus
