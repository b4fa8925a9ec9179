#include "nimbus/ops/registry.h"

namespace nimbus {

bool parameter_value_matches(const Json& v, ParamType t) {
  switch (t) {
    case ParamType::Bool: return v.is_boolean();
    case ParamType::Int: return v.is_number_integer();
    case ParamType::Float: return v.is_number();
    case ParamType::String: return v.is_string();
  }
  return false;
}

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
