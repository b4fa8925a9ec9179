#include "nimbus/workflow/workflow_spec.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <regex>
#include <iterator>
#include <set>

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include "nimbus/core/utf8.h"

namespace nimbus {
namespace {

SourceLocation at(const std::string& file, const YAML::Node& node) {
  return SourceLocation{file, node.Mark().is_null() ? 0 : node.Mark().line + 1};
}

// Limits of one workflow file. Real workflows are a few KB with a few hundred
// values; YAML aliases can make a tiny file expand exponentially ("billion laughs").
constexpr std::size_t kMaxWorkflowFileBytes = 1 << 20;
constexpr std::size_t kMaxValuesPerFile = 100000;
constexpr int kMaxValueDepth = 64;

// YAML -> JSON with aliases expanded, within the file's value budget.
class JsonConverter {
 public:
  explicit JsonConverter(const std::string& path) : path_(path) {}

  Json operator()(const YAML::Node& n) { return convert(n, 0); }

 private:
  Json convert(const YAML::Node& n, int depth) {
    if (++values_ > kMaxValuesPerFile || depth > kMaxValueDepth) {
      throw WorkflowError(at(path_, n), "yaml",
                          fmt::format("the values expand to more than {} items or {} levels of nesting (YAML aliases "
                                      "referencing aliases?); write the workflow out plainly",
                                      kMaxValuesPerFile, kMaxValueDepth));
    }
    switch (n.Type()) {
      case YAML::NodeType::Null:
      case YAML::NodeType::Undefined:
        return nullptr;
      case YAML::NodeType::Scalar:
        if (n.Tag() == "!") return Json(n.Scalar());  // "!" = quoted
        try {
          return yaml_scalar_to_json(n.Scalar());
        } catch (const WorkflowError&) {
          throw;
        } catch (const InputError& e) {
          throw WorkflowError(at(path_, n), "yaml", e.what());
        }
      case YAML::NodeType::Sequence: {
        Json a = Json::array();
        for (const auto& item : n) a.push_back(convert(item, depth + 1));
        return a;
      }
      case YAML::NodeType::Map: {
        Json o = Json::object();
        for (const auto& kv : n) o[kv.first.as<std::string>()] = convert(kv.second, depth + 1);
        return o;
      }
    }
    return nullptr;
  }

  const std::string& path_;
  std::size_t values_ = 0;
};

bool is_empty(const YAML::Node& n) { return !n || n.IsNull(); }

}  // namespace

Json yaml_scalar_to_json(const std::string& s) {
  static const std::regex null_re("~|null|Null|NULL|");
  static const std::regex true_re("true|True|TRUE|yes|Yes|YES|on|On|ON");
  static const std::regex false_re("false|False|FALSE|no|No|NO|off|Off|OFF");
  static const std::regex int_re("[-+]?[0-9]+");
  static const std::regex float_re(R"([-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?|[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN))");
  if (std::regex_match(s, null_re)) return nullptr;
  if (std::regex_match(s, true_re)) return true;
  if (std::regex_match(s, false_re)) return false;
  if (std::regex_match(s, int_re)) {
    try {
      return std::stoll(s);
    } catch (const std::out_of_range&) {
      return s;
    }
  }
  if (std::regex_match(s, float_re)) {
    if (s.find("inf") != std::string::npos || s.find("Inf") != std::string::npos || s.find("INF") != std::string::npos)
      return s[0] == '-' ? -std::numeric_limits<double>::infinity() : std::numeric_limits<double>::infinity();
    if (s.find("nan") != std::string::npos || s.find("NaN") != std::string::npos || s.find("NAN") != std::string::npos)
      return std::numeric_limits<double>::quiet_NaN();
    try {
      return std::stod(s);
    } catch (const std::out_of_range&) {
      throw InputError(fmt::format("number {} is out of the range of a 64-bit float (magnitude 2.2e-308 to 1.8e308); "
                                   "pass a value in range",
                                   s));
    }
  }
  return s;
}

std::string parameter_reference(const Json& value) {
  if (!value.is_string()) return {};
  const std::string& s = value.get_ref<const std::string&>();
  static const std::regex ref_re(R"(^@from\((.*)\))");
  std::smatch m;
  if (!std::regex_search(s, m, ref_re)) return {};
  if (m[1].str().empty()) throw InputError(fmt::format("Found empty parameter reference '{}'", s));
  return m[1].str();
}

SourceLocation WorkflowSpec::where(const std::string& key) const {
  auto it = at.find(key);
  return it != at.end() ? it->second : SourceLocation{path, 0};
}

const TaskNodeSpec* WorkflowSpec::task(const std::string& n) const {
  for (const auto& t : tasks)
    if (t.name == n) return &t;
  return nullptr;
}

bool WorkflowSpec::has_parameter(const std::string& n) const {
  for (const auto& p : parameters)
    if (p.first == n) return true;
  return false;
}

namespace {

// The structure checks of a loaded workflow document.
WorkflowSpec parse_workflow_root(const std::string& path, const YAML::Node& root) {
  WorkflowSpec spec;
  spec.path = path;
  JsonConverter to_json(path);
  const SourceLocation file_at{path, 0};
  if (!root.IsMap()) throw WorkflowError(file_at, "workflow", "the file must be a YAML mapping with name, sources, "
                                                              "sinks and tasks");

  static const std::set<std::string> known{"name",  "sources", "sinks",       "tasks",
                                           "edges", "parameters", "description", "default_parameters"};
  for (const auto& kv : root) {
    const std::string key = kv.first.as<std::string>();
    if (!known.count(key)) {
      throw WorkflowError(at(path, kv.first), key,
                          fmt::format("unknown field '{}'; allowed: name, sources, sinks, tasks, parameters, edges, "
                                      "description",
                                      key));
    }
    spec.at[key] = at(path, kv.first);
  }
  const std::string shown_name = root["name"] && root["name"].IsScalar() ? root["name"].Scalar() : "UNAMED";
  for (const char* required : {"name", "sources", "sinks", "tasks"}) {
    if (!root[required]) {
      throw WorkflowError(file_at, required,
                          fmt::format("Workflow specification '{}' is missing required field '{}'", shown_name,
                                      required));
    }
  }
  spec.name = shown_name;

  const YAML::Node sources = root["sources"];
  if (!sources.IsMap() || sources.size() == 0) {
    throw WorkflowError(at(path, sources), "sources",
                        "Sources field must be a mapping between strings and lists of strings, with at least one "
                        "source");
  }
  for (const auto& kv : sources) {
    const std::string name = kv.first.as<std::string>();
    spec.at["sources." + name] = at(path, kv.first);
    if (!kv.second.IsSequence() || kv.second.size() == 0) {
      throw WorkflowError(at(path, kv.first), "sources." + name,
                          "a source must list at least one target port, e.g. [task.port]");
    }
    std::vector<std::string> targets;
    for (const auto& t : kv.second) targets.push_back(t.as<std::string>());
    spec.sources.emplace_back(name, targets);
  }

  const YAML::Node sinks = root["sinks"];
  if (!is_empty(sinks)) {
    if (!sinks.IsMap()) throw WorkflowError(at(path, sinks), "sinks", "Sinks field must be a mapping of strings");
    for (const auto& kv : sinks) {
      const std::string name = kv.first.as<std::string>();
      spec.at["sinks." + name] = at(path, kv.first);
      if (!kv.second.IsScalar()) {
        throw WorkflowError(at(path, kv.first), "sinks." + name, "a sink is one port string, e.g. task.port");
      }
      spec.sinks.emplace_back(name, kv.second.Scalar());
    }
  }

  const YAML::Node params = root["parameters"];
  if (!is_empty(params)) {
    if (!params.IsMap()) throw WorkflowError(at(path, params), "parameters", "parameters must be a mapping");
    for (const auto& kv : params) {
      const std::string name = kv.first.as<std::string>();
      spec.at["parameters." + name] = at(path, kv.first);
      spec.parameters.emplace_back(name, to_json(kv.second));
    }
  }

  const YAML::Node tasks = root["tasks"];
  if (!tasks.IsMap() || tasks.size() == 0) {
    throw WorkflowError(at(path, tasks), "tasks", "tasks must be a non-empty mapping of task name to op or workflow");
  }
  for (const auto& kv : tasks) {
    TaskNodeSpec task;
    task.name = kv.first.as<std::string>();
    task.at = at(path, kv.first);
    const std::string key = "tasks." + task.name;
    const YAML::Node node = kv.second;
    if (!node.IsMap()) throw WorkflowError(task.at, key, "a task must be a mapping with 'op' or 'workflow'");
    for (const auto& field : node) {
      const std::string f = field.first.as<std::string>();
      const bool allowed = f == "parameters" || (f == "workflow") || ((f == "op" || f == "op_dir") && !node["workflow"]);
      if (!allowed) {
        throw WorkflowError(at(path, field.first), key + "." + f,
                            fmt::format("Task spec '{}' contains unknown field '{}'", task.name, f));
      }
    }
    if (!node["op"] && !node["workflow"]) {
      throw WorkflowError(task.at, key, "Task specification is missing fields 'op' or 'workflow'");
    }
    for (const char* f : {"op", "op_dir", "workflow"}) {
      if (node[f] && !node[f].IsScalar()) {
        throw WorkflowError(at(path, node[f]), key + "." + f,
                            fmt::format("'{}' field of task {} is not a string", f, task.name));
      }
    }
    if (node["op"]) task.op = node["op"].Scalar();
    if (node["op_dir"]) task.op_dir = node["op_dir"].Scalar();
    if (node["workflow"]) task.workflow = node["workflow"].Scalar();
    const YAML::Node tp = node["parameters"];
    if (!is_empty(tp)) {
      if (!tp.IsMap()) throw WorkflowError(at(path, tp), key + ".parameters", "task parameters must be a mapping");
      for (const auto& p : tp) {
        const std::string pname = p.first.as<std::string>();
        task.parameters[pname] = to_json(p.second);
        task.parameter_at[pname] = at(path, p.first);
      }
    }
    spec.tasks.push_back(std::move(task));
  }

  const YAML::Node edges = root["edges"];
  if (!is_empty(edges)) {
    if (!edges.IsSequence()) throw WorkflowError(at(path, edges), "edges", "edges must be a list");
    int index = 0;
    for (const auto& e : edges) {
      EdgeSpec edge;
      edge.at = at(path, e);
      const std::string key = fmt::format("edges[{}]", index++);
      if (!e.IsMap()) throw WorkflowError(edge.at, key, "an edge is a mapping with origin and destination");
      for (const char* f : {"origin", "destination"}) {
        if (!e[f]) {
          throw WorkflowError(edge.at, key, fmt::format("Workflow spec '{}' is missing field '{}'", spec.name, f));
        }
      }
      if (!e["origin"].IsScalar()) throw WorkflowError(edge.at, key + ".origin", "origin must be a port string");
      if (!e["destination"].IsSequence()) {
        throw WorkflowError(edge.at, key + ".destination", "destination must be a list of port strings");
      }
      edge.origin = e["origin"].Scalar();
      edge.origin_at = at(path, e["origin"]);
      edge.destination_at = at(path, e["destination"]);
      for (const auto& d : e["destination"]) edge.destinations.push_back(d.as<std::string>());
      spec.edges.push_back(std::move(edge));
    }
  }

  const YAML::Node description = root["description"];
  if (!is_empty(description)) {
    if (!description.IsMap()) throw WorkflowError(at(path, description), "description", "must be a mapping");
    static const std::set<std::string> known_desc{"short_description", "long_description", "sources", "sinks",
                                                  "parameters"};
    for (const auto& kv : description) {
      const std::string key = kv.first.as<std::string>();
      if (!known_desc.count(key)) {
        throw WorkflowError(at(path, kv.first), "description." + key,
                            "unknown description field; allowed: short_description, long_description, sources, "
                            "sinks, parameters");
      }
      if (!kv.second.IsNull()) spec.description[key] = to_json(kv.second);
    }
  }
  return spec;
}

}  // namespace

WorkflowSpec parse_workflow_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!std::filesystem::is_regular_file(path) || !in) {
    throw InputError(fmt::format("workflow '{}' cannot be read; check the path (or use a name such as "
                                 "data_ingestion/sentinel2/improve_cloud_mask)",
                                 path));
  }
  std::error_code size_error;
  if (const auto size = std::filesystem::file_size(path, size_error); !size_error && size > kMaxWorkflowFileBytes) {
    throw InputError(fmt::format("workflow '{}' is {} bytes, more than the {} a workflow may have; pass the workflow "
                                 "YAML, not a data file",
                                 path, size, kMaxWorkflowFileBytes));
  }
  const std::string text{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  if (const std::size_t bad = invalid_utf8_offset(text); bad != std::string_view::npos) {
    const int line = 1 + static_cast<int>(std::count(text.begin(), text.begin() + static_cast<std::ptrdiff_t>(bad), '\n'));
    throw WorkflowError(SourceLocation{path, line}, "yaml",
                        fmt::format("byte 0x{:02X} is not valid UTF-8; save the workflow as UTF-8",
                                    static_cast<unsigned char>(text[bad])));
  }
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    throw WorkflowError(SourceLocation{path, e.mark.is_null() ? 0 : e.mark.line + 1}, "yaml",
                        fmt::format("malformed YAML ({}); fix the syntax", e.msg));
  }
  try {
    return parse_workflow_root(path, root);
  } catch (const YAML::Exception& e) {
    // e.g. a mapping or sequence where a key or name must be text.
    throw WorkflowError(SourceLocation{path, e.mark.is_null() ? 0 : e.mark.line + 1}, "yaml",
                        fmt::format("unexpected YAML structure ({}); keys and names must be plain text", e.msg));
  }
}

}  // namespace nimbus
