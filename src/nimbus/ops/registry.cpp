#include "nimbus/ops/registry.h"

namespace nimbus {

const char* param_type_name(ParamType t) {
  switch (t) {
    case ParamType::Bool: return "bool";
    case ParamType::Int: return "int";
    case ParamType::Float: return "float";
    case ParamType::String: return "string";
  }
  return "?";
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
