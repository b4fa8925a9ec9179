// One built-in op on files, outside any workflow (the Python API's per-op entry).
#pragma once

#include <map>
#include <string>

#include "nimbus/ops/op_definition.h"

namespace nimbus {

// Checks the op name, input ports (all required) and parameter names and types
// (defaults fill the rest), runs the op and moves its outputs into `output_dir` as
// <port>.tif. Outputs appear only when the op succeeded. Throws InputError.
// `cancel` is polled between chips; true stops the op (Cancelled), nothing is left.
OpOutputs run_single_op(const std::string& op_name, const std::map<std::string, std::string>& inputs,
                        const Json& parameters, const std::string& output_dir, const CancelCheck& cancel = {});

}  // namespace nimbus
