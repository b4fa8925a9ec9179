#include "nimbus/ops/registry.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

#include <fmt/format.h>

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

std::string parameter_range_problem(const Json& v, const ParamSpec& p) {
  if (p.type != ParamType::Int && p.type != ParamType::Float) return {};
  if (!v.is_number()) return {};
  double lo = p.min, hi = p.max;
  if (p.type == ParamType::Int) {
    lo = std::max(lo, static_cast<double>(std::numeric_limits<int>::min()));
    hi = std::min(hi, static_cast<double>(std::numeric_limits<int>::max()));
    // Compare in 64-bit integers: a double would round values near 2^63.
    const bool too_big = v.is_number_unsigned() && v.get<std::uint64_t>() > static_cast<std::uint64_t>(INT64_MAX);
    const std::int64_t i = too_big ? INT64_MAX : v.get<std::int64_t>();
    if (!too_big && i >= static_cast<std::int64_t>(lo) && i <= static_cast<std::int64_t>(hi)) return {};
    return fmt::format("= {} is outside [{}, {}]", v.dump(), static_cast<std::int64_t>(lo), static_cast<std::int64_t>(hi));
  }
  const double d = v.get<double>();
  if (std::isfinite(d) && d >= lo && d <= hi) return {};
  const auto bound = [](double b) {
    return std::abs(b) >= std::numeric_limits<double>::max() ? std::string(b < 0 ? "-inf" : "inf") : fmt::format("{}", b);
  };
  return fmt::format("= {} is outside [{}, {}]{}", v.dump(), bound(lo), bound(hi),
                     std::isfinite(d) ? "" : " (must be a finite number)");
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
