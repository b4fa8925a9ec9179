#include "nimbus/workflow/describe.h"

#include <algorithm>
#include <filesystem>
#include <map>

#include <limits>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "nimbus/ops/registry.h"
#include "nimbus/workflow/cache.h"

namespace nimbus {
namespace fs = std::filesystem;
namespace {

std::string text_of(const Json& description, const std::string& section, const std::string& key) {
  if (!description.contains(section) || !description[section].is_object()) return "";
  const Json& s = description[section];
  return s.contains(key) && s[key].is_string() ? s[key].get<std::string>() : "";
}

// A workflow parameter's displayed default: its own value, else the unique
// default of the task parameters it maps to (a tuple when they differ).
std::string effective_default(const WorkflowSpec& spec, const std::string& name, const Json& value,
                              const WorkflowLibrary& library) {
  if (!value.is_null()) return python_str(value);
  std::vector<std::string> found;
  for (const TaskNodeSpec& t : spec.tasks) {
    for (const auto& item : t.parameters.items()) {
      if (parameter_reference(item.value()) != name) continue;
      std::string d = "None";
      if (!t.op.empty()) {
        if (const OpDefinition* op = find_op(t.op))
          if (const ParamSpec* p = op->parameter(item.key())) d = python_str(p->default_value);
      } else {
        const WorkflowSpec inner = parse_workflow_file(library.resolve(t.workflow));
        for (const auto& [k, v] : inner.parameters)
          if (k == item.key()) d = effective_default(inner, k, v, library);
      }
      if (std::find(found.begin(), found.end(), d) == found.end()) found.push_back(d);
    }
  }
  if (found.size() == 1) return found.front();
  return fmt::format("({})", fmt::join(found, ", "));
}

// The same as JSON values: the distinct defaults of the task parameters it feeds.
Json effective_default_json(const WorkflowSpec& spec, const std::string& name, const Json& value,
                            const WorkflowLibrary& library) {
  if (!value.is_null()) return value;
  Json found = Json::array();
  for (const TaskNodeSpec& t : spec.tasks) {
    for (const auto& item : t.parameters.items()) {
      if (parameter_reference(item.value()) != name) continue;
      Json d;
      if (!t.op.empty()) {
        if (const OpDefinition* op = find_op(t.op))
          if (const ParamSpec* p = op->parameter(item.key())) d = p->default_value;
      } else {
        const WorkflowSpec inner = parse_workflow_file(library.resolve(t.workflow));
        for (const auto& [k, v] : inner.parameters)
          if (k == item.key()) d = effective_default_json(inner, k, v, library);
      }
      if (std::find(found.begin(), found.end(), d) == found.end()) found.push_back(d);
    }
  }
  if (found.empty()) return nullptr;
  if (found.size() == 1) return found.front();
  return found;
}

}  // namespace

std::string farmvibes_type_name(const std::string& data_type) {
  static const std::map<std::string, std::string> modules{
      {"DataVibe", "vibe_core.data.core_types"},        {"Raster", "vibe_core.data.rasters"},
      {"CloudRaster", "vibe_core.data.rasters"},        {"CategoricalRaster", "vibe_core.data.rasters"},
      {"CloudMask", "vibe_core.data.rasters"},          {"Sentinel2Product", "vibe_core.data.sentinel"},
      {"Sentinel2Raster", "vibe_core.data.sentinel"},   {"Sentinel2CloudMask", "vibe_core.data.sentinel"},
      {"Sentinel2CloudProbability", "vibe_core.data.sentinel"}};
  const auto it = modules.find(data_type);
  return it == modules.end() ? data_type : it->second + "." + data_type;
}

Json describe_workflow_json(const std::string& name_or_path, const WorkflowLibrary& library) {
  const std::string path = library.resolve(name_or_path);
  const WorkflowGraph graph = build_workflow_graph(path, Json::object(), library);
  const WorkflowSpec spec = parse_workflow_file(path);
  const Json& d = spec.description;
  const auto port_type = [&](const PortRef& port, bool input) {
    const GraphNode* node = graph.node(port.node);
    for (const PortSpec& p : input ? node->op->inputs : node->op->outputs)
      if (p.name == port.port) return p.type;
    return std::string("DataVibe");
  };
  Json out = Json::object();
  out["name"] = spec.name;
  Json inputs = Json::object(), outputs = Json::object(), parameters = Json::object();
  for (const auto& [name, targets] : graph.sources) {
    // A source feeding several ports has the most specific of their types.
    std::string type = port_type(targets.front(), true);
    for (const PortRef& t : targets)
      if (data_type_is_a(port_type(t, true), type)) type = port_type(t, true);
    inputs[name] = farmvibes_type_name(type);
  }
  for (const auto& [name, port] : graph.sinks) outputs[name] = farmvibes_type_name(port_type(port, false));
  for (const auto& [name, value] : spec.parameters) parameters[name] = effective_default_json(spec, name, value, library);
  out["inputs"] = inputs;
  out["outputs"] = outputs;
  out["parameters"] = parameters;
  Json description = Json::object();
  const auto texts = [&](const std::string& section, const std::vector<std::string>& keys) {
    Json s = Json::object();
    for (const std::string& k : keys) s[k] = text_of(d, section, k);
    return s;
  };
  std::vector<std::string> names;
  for (const auto& [name, targets] : spec.sources) names.push_back(name);
  description["inputs"] = texts("sources", names);
  names.clear();
  for (const auto& [name, port] : spec.sinks) names.push_back(name);
  description["outputs"] = texts("sinks", names);
  names.clear();
  for (const auto& [name, value] : spec.parameters) names.push_back(name);
  description["parameters"] = texts("parameters", names);
  Json tasks = Json::object();
  for (const TaskNodeSpec& t : spec.tasks) {
    if (!t.op.empty()) {
      const OpDefinition* op = find_op(t.op);
      tasks[t.name] = op ? op->short_description : "";
    } else {
      const WorkflowSpec inner = parse_workflow_file(library.resolve(t.workflow));
      tasks[t.name] = "";
      if (inner.description.contains("short_description") && inner.description["short_description"].is_string())
        tasks[t.name] = inner.description["short_description"];
    }
  }
  description["task_descriptions"] = tasks;
  for (const char* key : {"short_description", "long_description"})
    description[key] = d.contains(key) && d[key].is_string() ? d[key].get<std::string>() : std::string();
  out["description"] = description;
  return out;
}

std::vector<std::string> list_workflows(const std::string& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  if (!fs::is_directory(dir)) return names;
  for (auto it = fs::recursive_directory_iterator(dir, ec); it != fs::recursive_directory_iterator(); ++it) {
    if (it->is_regular_file() && it->path().extension() == ".yaml") {
      fs::path rel = fs::relative(it->path(), dir);
      rel.replace_extension();
      names.push_back(rel.generic_string());
    }
  }
  std::sort(names.begin(), names.end());
  return names;
}

std::string workflow_mermaid(const WorkflowSpec& spec) {
  std::map<std::string, std::string> source_id, sink_id, task_id;
  std::string out = "    graph TD\n";
  int i = 0;
  for (const auto& [name, targets] : spec.sources) {
    source_id[name] = fmt::format("inp{}>{}]", ++i, name);
    out += "    " + source_id[name] + "\n";
  }
  i = 0;
  for (const auto& [name, port] : spec.sinks) {
    sink_id[name] = fmt::format("out{}>{}]", ++i, name);
    out += "    " + sink_id[name] + "\n";
  }
  i = 0;
  for (const TaskNodeSpec& t : spec.tasks) {
    task_id[t.name] = fmt::format("tsk{}{{{{{}}}}}", ++i, t.name);
    out += "    " + task_id[t.name] + "\n";
  }
  const auto split = [](const std::string& s) {
    const auto dot = s.rfind('.');
    return std::make_pair(s.substr(0, dot), s.substr(dot + 1));
  };
  for (const EdgeSpec& e : spec.edges) {
    const auto [from, from_port] = split(e.origin);
    for (const std::string& d : e.destinations) {
      const auto [to, to_port] = split(d);
      out += fmt::format("    {} -- {} --> {}\n", task_id[from], to_port, task_id[to]);
    }
  }
  for (const auto& [name, targets] : spec.sources) {
    for (const std::string& t : targets) {
      const auto [to, to_port] = split(t);
      out += fmt::format("    {} -- {} --> {}\n", source_id[name], to_port, task_id[to]);
    }
  }
  for (const auto& [name, port] : spec.sinks) {
    const auto [from, from_port] = split(port);
    out += fmt::format("    {} -- {} --> {}\n", task_id[from], from_port, sink_id[name]);
  }
  return out;
}

std::string describe_workflow(const std::string& name_or_path, const WorkflowLibrary& library) {
  const std::string path = library.resolve(name_or_path);
  build_workflow_graph(path, Json::object(), library);  // describe only valid workflows
  const WorkflowSpec spec = parse_workflow_file(path);
  const Json& d = spec.description;
  std::string out = fmt::format("{}\n", spec.name);
  if (d.contains("short_description")) out += fmt::format("\n{}\n", d["short_description"].get<std::string>());
  if (d.contains("long_description")) out += fmt::format("\n{}\n", d["long_description"].get<std::string>());
  out += "\nSources:\n";
  for (const auto& [name, targets] : spec.sources)
    out += fmt::format("  {:<14} {}\n", name, text_of(d, "sources", name));
  out += "\nSinks:\n";
  for (const auto& [name, port] : spec.sinks) out += fmt::format("  {:<14} {}\n", name, text_of(d, "sinks", name));
  out += "\nParameters (default):\n";
  for (const auto& [name, value] : spec.parameters) {
    out += fmt::format("  {:<14} ({}) {}\n", name, effective_default(spec, name, value, library),
                       text_of(d, "parameters", name));
  }
  out += "\nTasks:\n";
  for (const TaskNodeSpec& t : spec.tasks) {
    out += fmt::format("  {:<14} {}\n", t.name, t.op.empty() ? "workflow " + t.workflow : "op " + t.op);
  }
  out += "\n```mermaid\n" + workflow_mermaid(spec) + "```\n";
  return out;
}

std::string describe_op(const OpDefinition& op) {
  std::string out = fmt::format("{} (op_dir {}, version {})\n\n{}\n\nInputs:\n", op.name, op.op_dir, op.version,
                                op.short_description);
  for (const auto& p : op.inputs) out += fmt::format("  {:<22} {:<26} {}\n", p.name, p.type, p.help);
  out += "\nOutput:\n";
  for (const auto& p : op.outputs) out += fmt::format("  {:<22} {:<26} {}\n", p.name, p.type, p.help);
  out += "\nParameters:\n";
  for (const auto& p : op.parameters) {
    std::string accepted;
    if (!p.choices.empty()) accepted = fmt::format(" {{{}}}", fmt::join(p.choices, "|"));
    if (p.min > std::numeric_limits<double>::lowest() && p.max < std::numeric_limits<double>::max()) {
      accepted = fmt::format(" [{}, {}]", p.min, p.max);
    } else if (p.min > std::numeric_limits<double>::lowest()) {
      accepted = fmt::format(" (at least {})", p.min);
    }
    out += fmt::format("  {:<22} {:<7} default {:<44} {}{}\n", p.name, param_type_name(p.type),
                       python_str(p.default_value), p.help, accepted);
  }
  out += fmt::format("\nCache key parameters: {}\n", fmt::join(op.dependencies(), ", "));
  return out;
}

std::string describe_operation(const OperationSpec& operation) {
  std::string out = fmt::format("{}\n\n{}\n\nParameters (CLI flag; * affects the output; [tag]):\n", operation.name,
                                operation.description);
  for (const auto& p : operation.parameters) {
    out += fmt::format("  {:<20} {:<22} {:<6} default {:<10} {}{}{}{}\n", p.name, cli_flag_of(p),
                       param_type_name(p.type), p.default_value.is_null() ? "-" : python_str(p.default_value),
                       p.affects_output ? "* " : "", p.required ? "(required) " : "", p.help,
                       p.tag.empty() ? "" : " [" + p.tag + "]");
  }
  return out;
}

}  // namespace nimbus
