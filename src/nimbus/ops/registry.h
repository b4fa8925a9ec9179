// The registry of built-in ops: one entry per op, the single source of their
// names, ports, parameters, defaults and help for the CLI and the engine.
#pragma once

#include <string>
#include <vector>

#include "nimbus/ops/op_definition.h"

namespace nimbus {

const std::vector<OpDefinition>& builtin_ops();

// nullptr when no op has that name.
const OpDefinition* find_op(const std::string& name);

// Op definitions, one per op source file.
OpDefinition compute_cloud_prob_definition();
OpDefinition compute_shadow_prob_definition();
OpDefinition merge_cloud_masks_simple_definition();

}  // namespace nimbus
