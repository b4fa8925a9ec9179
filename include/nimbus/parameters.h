// Declared parameters and operations: the one description of every option Nimbus
// takes. The CLI's options and --help, the Python keyword arguments, workflow YAML
// validation, `ops describe`, the workflow cache key, the batch recipe and the
// GeoTIFF provenance tags are all derived from these declarations, so a parameter
// is added in exactly one place (its operation's declaration).
#pragma once

#include <functional>
#include <limits>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "nimbus/core/error.h"

namespace nimbus {

using Json = nlohmann::json;

enum class ParamType {
  Bool,
  Int,
  Float,
  String,      // free text, or one of `choices`
  Path,        // a file or directory; never empty when given
  StringList,  // repeatable (CLI: the option given several times)
};

// What a parameter is to the operation that declares it.
enum class ParamRole {
  Setting,  // tunes the computation
  Input,    // names a file the operation reads
  Output,   // names a file or directory the operation writes
};

struct ParamSpec {
  std::string name;  // canonical: YAML workflows and Python keywords use it as is
  ParamType type;
  Json default_value;  // null: no default (optional when not required)
  std::string help;
  // Accepted range of Int and Float values (ints are also bounded by the C++ int
  // they are stored in, floats must be finite).
  double min = std::numeric_limits<double>::lowest();
  double max = std::numeric_limits<double>::max();
  std::vector<std::string> choices;  // the accepted values of a String; empty: any
  // Whether the value changes the output: such parameters enter the workflow cache
  // key, the batch recipe and (with a tag) the provenance tags.
  bool affects_output = false;
  bool required = false;
  ParamRole role = ParamRole::Setting;
  std::string tag;  // GeoTIFF metadata item recording the value; empty: none
  std::string cli_flag;  // the CLI's spelling; empty: "--" + name with '_' as '-'
  // The heading the parameter is listed under in --help and docs; empty: by role
  // (see help_group_of).
  std::string group;

  // Chainable setters, so declarations read as one expression:
  // ParamSpec{"closing_size", ParamType::Int, 5, "...", 0, 16384}.affecting_output().tagged("NIMBUS_CLOSING_SIZE")
  ParamSpec& affecting_output(bool affects = true) {
    affects_output = affects;
    return *this;
  }
  ParamSpec& one_of(std::vector<std::string> accepted) {
    choices = std::move(accepted);
    return *this;
  }
  ParamSpec& mandatory() {
    required = true;
    return *this;
  }
  ParamSpec& as(ParamRole r) {
    role = r;
    return *this;
  }
  ParamSpec& tagged(std::string metadata_item) {
    tag = std::move(metadata_item);
    return *this;
  }
  ParamSpec& on_cli_as(std::string flag) {
    cli_flag = std::move(flag);
    return *this;
  }
  ParamSpec& in_group(std::string heading) {
    group = std::move(heading);
    return *this;
  }
};

// The CLI's spelling of a parameter (e.g. "--cloud-thr").
std::string cli_flag_of(const ParamSpec& spec);

// The heading a parameter is listed under: its declared group, else "Inputs",
// "Outputs" or "Parameters" by its role.
std::string help_group_of(const ParamSpec& spec);

// A named operation with its declared parameters (GDALAlgorithm's and libvips'
// operation declarations are the model).
struct OperationSpec {
  std::string name;         // e.g. "improve-cloud-mask"
  std::string description;  // one sentence
  std::vector<ParamSpec> parameters;

  const ParamSpec* parameter(const std::string& name) const;
  // The names of the parameters that affect the output, in declaration order.
  std::vector<std::string> output_affecting() const;
};

const char* param_type_name(ParamType type);

// Whether a value has the declared type (ints are valid floats, paths are strings,
// a StringList is an array of strings).
bool parameter_value_matches(const Json& value, ParamType type);

// Empty when a value of the right type is acceptable (within the range, one of the
// choices, a non-empty path); else what is wrong and what to use, e.g.
// "= 4294967301 is outside [0, 16384]".
std::string parameter_range_problem(const Json& value, const ParamSpec& spec);

// A parameter named inside a library message: "@[name]". Front ends rewrite these
// references into their own spelling with spell_parameters (the CLI: --cloud-thr,
// Python and workflows: cloud_thr), so library messages never name a CLI flag.
std::string param_ref(const std::string& name);

// `text` with every @[name] replaced by spell(name).
std::string spell_parameters(const std::string& text, const std::function<std::string(const std::string&)>& spell);

// A bad parameter value; the message starts with the parameter's reference, e.g.
// "@[closing_size] = 20000 is outside [0, 16384]".
class ParameterError : public InputError {
 public:
  ParameterError(const std::string& parameter, const std::string& problem);
  const std::string& parameter() const { return parameter_; }
  const std::string& problem() const { return problem_; }  // the message after the reference

 private:
  std::string parameter_;
  std::string problem_;
};

// Checks `values` (an object of name -> value; null means "not given") against the
// declaration and returns every declared parameter resolved: given values, else
// defaults (null when neither). Throws ParameterError for an unknown name, a wrong
// type, a value out of range or a missing required parameter.
Json resolve_parameters(const std::vector<ParamSpec>& declared, const Json& values);

// The declarations as JSON (one object per parameter: name, type, default, help,
// min/max, choices, affects_output, required, role, group, tag, cli_flag), for tools,
// bindings and `nimbus ops describe --json`.
Json parameters_json(const std::vector<ParamSpec>& declared);

// The value as text for tags and messages: numbers as Python prints them
// (0.3, 5, True), strings as they are, lists joined with spaces.
std::string parameter_text(const Json& value);

}  // namespace nimbus
