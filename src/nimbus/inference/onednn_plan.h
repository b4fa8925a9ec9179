// The IR lowered to an executable plan: oneDNN primitives (layouts chosen by
// oneDNN, weights reordered once) and blocked kernels, with buffers assigned from
// tensor lifetimes. A Plan is immutable and shared; a RunState owns one set of
// activation buffers and runs the plan on a chip. Private to the inference module.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <oneapi/dnnl/dnnl.hpp>

#include "nimbus/inference/onednn_ir.h"

namespace nimbus::onednn {

using dnnl::memory;

struct PlanTensor {
  memory::desc md;
  int base = -1;       // storage owner when this tensor shares another one's buffer
  bool view = false;   // a second look at data that stays alive (reshape, slice), not a hand-over
};

struct Step {
  std::string what;
  dnnl::primitive prim;                           // a oneDNN primitive, or
  std::function<void(float* const*)> kernel;      // a blocked kernel over `kernel_tensors`
  std::vector<int> kernel_tensors;
  std::vector<std::pair<int, int>> tensor_args;   // dnnl arg -> plan tensor
  std::vector<std::pair<int, int>> const_args;    // dnnl arg -> constant
  bool scratchpad = false;
};

struct Plan {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  std::vector<PlanTensor> tensors;
  std::vector<memory> constants;
  std::vector<Step> steps;
  std::vector<int> buffer_of;            // per tensor (base tensors only; -1 = none)
  std::vector<std::size_t> buffer_bytes;
  std::size_t scratchpad_bytes = 0;
  int input = -1;                        // plan tensor bound to the caller's chip
  int output = -1;                       // plan tensor bound to the caller's output vector
  Dims input_dims, output_dims;
  std::size_t weight_bytes = 0;
  double flops = 0.0;  // 2 x multiply-adds of the convolutions and matrix products
};


// Lowers `graph` into `plan` (primitives, constants, steps, buffer sizes).
// Throws dnnl::error when oneDNN cannot build a primitive for it.
void lower(const IrGraph& graph, Plan& plan);

// One set of activation buffers and the memory objects bound to them.
// NIMBUS_ONEDNN_PROFILE=1 times every step and prints a table when it goes away.
class RunState {
 public:
  explicit RunState(std::shared_ptr<const Plan> plan);
  ~RunState();
  RunState(const RunState&) = delete;
  RunState& operator=(const RunState&) = delete;

  // Runs the plan on `input` (the plan's input dims, plain NCHW) into `output`
  // (the plan's output dims, plain NCHW).
  void execute(const float* input, float* output);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace nimbus::onednn
