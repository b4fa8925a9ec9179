#include "nimbus/parameters.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace nimbus {

std::string cli_flag_of(const ParamSpec& spec) {
  if (!spec.cli_flag.empty()) return spec.cli_flag;
  std::string flag = "--" + spec.name;
  std::replace(flag.begin(), flag.end(), '_', '-');
  return flag;
}

std::string help_group_of(const ParamSpec& spec) {
  if (!spec.group.empty()) return spec.group;
  switch (spec.role) {
    case ParamRole::Input: return "Inputs";
    case ParamRole::Output: return "Outputs";
    case ParamRole::Setting: break;
  }
  return "Parameters";
}

const ParamSpec* OperationSpec::parameter(const std::string& n) const {
  for (const auto& p : parameters)
    if (p.name == n) return &p;
  return nullptr;
}

std::vector<std::string> OperationSpec::output_affecting() const {
  std::vector<std::string> names;
  for (const auto& p : parameters)
    if (p.affects_output) names.push_back(p.name);
  return names;
}

const char* param_type_name(ParamType t) {
  switch (t) {
    case ParamType::Bool: return "bool";
    case ParamType::Int: return "int";
    case ParamType::Float: return "float";
    case ParamType::String: return "string";
    case ParamType::Path: return "path";
    case ParamType::StringList: return "list of strings";
  }
  return "?";
}

bool parameter_value_matches(const Json& v, ParamType t) {
  switch (t) {
    case ParamType::Bool: return v.is_boolean();
    case ParamType::Int: return v.is_number_integer();
    case ParamType::Float: return v.is_number();
    case ParamType::String:
    case ParamType::Path: return v.is_string();
    case ParamType::StringList:
      return v.is_array() && std::all_of(v.begin(), v.end(), [](const Json& item) { return item.is_string(); });
  }
  return false;
}

std::string parameter_range_problem(const Json& v, const ParamSpec& p) {
  if (p.type == ParamType::Path) {
    return v.is_string() && v.get<std::string>().empty()
               ? "is an empty path; give a path or leave the parameter out"
               : std::string();
  }
  if (p.type == ParamType::String && !p.choices.empty() && v.is_string()) {
    if (std::find(p.choices.begin(), p.choices.end(), v.get<std::string>()) != p.choices.end()) return {};
    return fmt::format("= '{}' is not one of {}", v.get<std::string>(), fmt::join(p.choices, ", "));
  }
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
    if (!too_big && i < static_cast<std::int64_t>(lo) && p.max >= std::numeric_limits<int>::max()) {
      return fmt::format("= {} is below the minimum of {}", i, static_cast<std::int64_t>(lo));
    }
    return fmt::format("= {} is outside [{}, {}]", v.dump(), static_cast<std::int64_t>(lo),
                       static_cast<std::int64_t>(hi));
  }
  const double d = v.get<double>();
  if (std::isfinite(d) && d >= lo && d <= hi) return {};
  const auto bound = [](double b) {
    return std::abs(b) >= std::numeric_limits<double>::max() ? std::string(b < 0 ? "-inf" : "inf")
                                                              : fmt::format("{}", b);
  };
  return fmt::format("= {} is outside [{}, {}]{}", v.dump(), bound(lo), bound(hi),
                     std::isfinite(d) ? "" : " (must be a finite number)");
}

std::string param_ref(const std::string& name) { return "@[" + name + "]"; }

std::string spell_parameters(const std::string& text, const std::function<std::string(const std::string&)>& spell) {
  std::string out;
  std::size_t at = 0;
  while (true) {
    const std::size_t open = text.find("@[", at);
    const std::size_t close = open == std::string::npos ? open : text.find(']', open + 2);
    if (close == std::string::npos) break;
    out.append(text, at, open - at);
    out += spell(text.substr(open + 2, close - open - 2));
    at = close + 1;
  }
  out.append(text, at, std::string::npos);
  return out;
}

ParameterError::ParameterError(const std::string& parameter, const std::string& problem)
    : InputError(param_ref(parameter) + " " + problem), parameter_(parameter), problem_(problem) {}

Json resolve_parameters(const std::vector<ParamSpec>& declared, const Json& values) {
  if (!values.is_null() && !values.is_object()) {
    throw InputError("parameters must be a mapping of parameter name to value");
  }
  Json resolved = Json::object();
  for (const ParamSpec& p : declared) resolved[p.name] = p.default_value;
  if (values.is_object()) {
    for (const auto& item : values.items()) {
      const auto it = std::find_if(declared.begin(), declared.end(),
                                   [&](const ParamSpec& p) { return p.name == item.key(); });
      if (it == declared.end()) {
        std::vector<std::string> names;
        for (const auto& p : declared) names.push_back(p.name);
        throw ParameterError(item.key(), fmt::format("is unknown; the parameters are {}", fmt::join(names, ", ")));
      }
      if (!item.value().is_null()) resolved[item.key()] = item.value();  // null keeps the default
    }
  }
  for (const ParamSpec& p : declared) {
    const Json& v = resolved[p.name];
    if (v.is_null()) {
      if (p.required) throw ParameterError(p.name, "is required; " + p.help);
      continue;
    }
    if (!parameter_value_matches(v, p.type)) {
      throw ParameterError(p.name, fmt::format("must be of type {}, got {} ({})", param_type_name(p.type),
                                               v.dump(-1, ' ', false, Json::error_handler_t::replace),
                                               v.type_name()));
    }
    if (const std::string problem = parameter_range_problem(v, p); !problem.empty()) {
      throw ParameterError(p.name, problem);
    }
  }
  return resolved;
}

Json parameters_json(const std::vector<ParamSpec>& declared) {
  Json out = Json::array();
  for (const ParamSpec& p : declared) {
    Json j{{"name", p.name},
           {"type", param_type_name(p.type)},
           {"default", p.default_value},
           {"help", p.help},
           {"affects_output", p.affects_output},
           {"required", p.required},
           {"role", p.role == ParamRole::Input ? "input" : p.role == ParamRole::Output ? "output" : "setting"},
           {"group", help_group_of(p)},
           {"cli_flag", cli_flag_of(p)}};
    if (p.min > std::numeric_limits<double>::lowest()) j["min"] = p.min;
    if (p.max < std::numeric_limits<double>::max()) j["max"] = p.max;
    if (!p.choices.empty()) j["choices"] = p.choices;
    if (!p.tag.empty()) j["tag"] = p.tag;
    out.push_back(std::move(j));
  }
  return out;
}

std::string parameter_text(const Json& v) {
  if (v.is_boolean()) return v.get<bool>() ? "True" : "False";
  if (v.is_number_integer()) return v.dump();
  if (v.is_number_float()) return fmt::format("{}", v.get<double>());
  if (v.is_string()) return v.get<std::string>();
  if (v.is_array()) {
    std::vector<std::string> items;
    for (const Json& item : v) items.push_back(parameter_text(item));
    return fmt::format("{}", fmt::join(items, " "));
  }
  if (v.is_null()) return "None";
  return v.dump();
}

}  // namespace nimbus
