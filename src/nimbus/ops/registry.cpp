#include "nimbus/ops/registry.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace nimbus {

std::string op_parameter_error(const OpDefinition& op, const ParameterError& error) {
  if (op.parameter(error.parameter()) == nullptr) {
    std::vector<std::string> names;
    for (const auto& p : op.parameters) names.push_back(p.name);
    return fmt::format("unknown parameter '{}' of op {}; its parameters: {}", error.parameter(), op.name,
                       fmt::join(names, ", "));
  }
  return fmt::format("parameter {} of op {} {}", error.parameter(), op.name, error.problem());
}

const std::vector<OpDefinition>& builtin_ops() {
  static const std::vector<OpDefinition> ops{
      compute_cloud_prob_definition(),
      compute_shadow_prob_definition(),
      merge_cloud_masks_simple_definition(),
  };
  return ops;
}

const OpDefinition* find_op(const std::string& name) {
  for (const auto& op : builtin_ops())
    if (op.name == name) return &op;
  return nullptr;
}

}  // namespace nimbus
