#include "nimbus/workflow/workflow_graph.h"

#include <algorithm>
#include <filesystem>
#include <set>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "nimbus/ops/registry.h"

namespace nimbus {
namespace fs = std::filesystem;
namespace {

// FarmVibes' data types used by these ops, each with its base classes.
const std::map<std::string, std::vector<std::string>>& type_parents() {
  static const std::map<std::string, std::vector<std::string>> parents{
      {"DataVibe", {}},
      {"Raster", {"DataVibe"}},
      {"Sentinel2Product", {"DataVibe"}},
      {"Sentinel2Raster", {"Raster", "Sentinel2Product"}},
      {"CloudRaster", {"Raster"}},
      {"CategoricalRaster", {"Raster"}},
      {"Sentinel2CloudProbability", {"CloudRaster", "Sentinel2Product"}},
      {"CloudMask", {"CategoricalRaster", "CloudRaster", "Sentinel2Product"}},
      {"Sentinel2CloudMask", {"CloudMask", "Sentinel2Product"}},
  };
  return parents;
}

PortRef split_port(const std::string& s, const SourceLocation& at, const std::string& key) {
  const auto dot = s.rfind('.');
  if (dot == std::string::npos || dot == 0 || dot + 1 == s.size()) {
    throw WorkflowError(at, key, fmt::format("'{}' is not a port reference; write task.port", s));
  }
  return PortRef{s.substr(0, dot), s.substr(dot + 1)};
}

// Every "@from(x)" reference inside a (possibly nested) parameter value.
void collect_references(const Json& v, std::set<std::string>& refs) {
  if (v.is_object()) {
    for (const auto& item : v.items()) collect_references(item.value(), refs);
  } else if (const std::string r = parameter_reference(v); !r.empty()) {
    refs.insert(r);
  }
}

// The expanded form of one workflow level: its op nodes and how its own sources
// and sinks map onto them.
struct Expanded {
  std::vector<GraphNode> nodes;
  std::vector<GraphEdge> edges;
  std::map<std::string, std::vector<PortRef>> sources;
  std::map<std::string, PortRef> sinks;
  std::vector<std::string> source_order;
  std::vector<std::string> sink_order;
};

// Limits of one expanded workflow: FarmVibes' largest workflows have a few dozen
// ops and a few levels of nesting; nested workflows referenced by several tasks
// multiply, so a few tiny files could otherwise expand to millions of ops.
constexpr std::size_t kMaxWorkflowOps = 2000;
constexpr std::size_t kMaxWorkflowNesting = 32;

class Builder {
 public:
  explicit Builder(const WorkflowLibrary& library) : library_(library) {}

  // Each file is read and parsed once, however many tasks reference it.
  const WorkflowSpec& load(const std::string& path) {
    auto it = specs_.find(path);
    if (it == specs_.end()) it = specs_.emplace(path, parse_workflow_file(path)).first;
    return it->second;
  }

  Expanded expand(const std::string& path, const Json& overrides, const std::string& prefix,
                  std::vector<std::string>& stack) {
    const WorkflowSpec& spec = load(path);
    if (std::find(stack.begin(), stack.end(), spec.name) != stack.end()) {
      throw WorkflowError(spec.where("name"), "name",
                          fmt::format("Recursive definition of workflow {} is not supported", spec.name));
    }
    if (stack.size() >= kMaxWorkflowNesting) {
      throw WorkflowError(spec.where("name"), "name",
                          fmt::format("workflows are nested more than {} levels deep ({}); flatten the nesting",
                                      kMaxWorkflowNesting, fmt::join(stack, " > ")));
    }
    stack.push_back(spec.name);

    // Parameters: YAML defaults, then overrides (null overrides fall through).
    Json params = Json::object();
    for (const auto& [k, v] : spec.parameters) params[k] = v;
    for (const auto& item : overrides.items()) {
      if (!params.contains(item.key())) {
        throw WorkflowError(spec.where("parameters"), "parameters",
                            fmt::format("Tried to overwrite non-existent parameter {}; known: {}", item.key(),
                                        known_names(spec)));
      }
      if (!item.value().is_null()) params[item.key()] = item.value();
    }
    check_parameter_mapping(spec);

    Expanded out;
    std::map<std::string, Expanded> nested;  // task name -> its expansion (with prefixed node names)
    for (const TaskNodeSpec& task : spec.tasks) {
      const std::string full = prefix + task.name;
      if (!task.workflow.empty()) {
        Json inner_overrides = Json::object();
        for (const auto& item : task.parameters.items()) {
          inner_overrides[item.key()] = resolve_value(spec, task, item.key(), item.value(), params, Json());
        }
        Expanded inner;
        try {
          inner = expand(library_.resolve(task.workflow), inner_overrides, full + ".", stack);
        } catch (const WorkflowError&) {
          throw;
        } catch (const InputError& e) {
          throw WorkflowError(task.at, "tasks." + task.name + ".workflow", e.what());
        }
        for (auto& n : inner.nodes) out.nodes.push_back(n);
        for (auto& e : inner.edges) out.edges.push_back(e);
        nested[task.name] = std::move(inner);
        continue;
      }
      if (++op_count_ > kMaxWorkflowOps) {
        throw WorkflowError(task.at, "tasks." + task.name,
                            fmt::format("the workflow expands to more than {} ops (nested workflows referenced by "
                                        "several tasks multiply); simplify the workflow",
                                        kMaxWorkflowOps));
      }
      out.nodes.push_back(make_op_node(spec, task, full, params));
    }

    // Maps "task.port" of this level to op-node ports, through nested workflows.
    const auto targets_of = [&](const std::string& ref, const SourceLocation& at, const std::string& key,
                                bool as_input) -> std::vector<PortRef> {
      const PortRef p = split_port(ref, at, key);
      const std::string task_name = p.node.substr(0, p.node.find('.'));
      const TaskNodeSpec* task = spec.task(task_name);
      if (!task || task_name != p.node) {
        throw WorkflowError(at, key,
                            fmt::format("'{}' refers to task '{}', which does not exist in workflow {}; tasks: {}",
                                        ref, p.node, spec.name, task_names(spec)));
      }
      if (!task->workflow.empty()) {
        const Expanded& inner = nested.at(task_name);
        if (as_input) {
          auto it = inner.sources.find(p.port);
          if (it == inner.sources.end()) {
            throw WorkflowError(at, key, fmt::format("Could not find source '{}' in inner workflow '{}'; sources: {}",
                                                     p.port, task_name, fmt::join(inner.source_order, ", ")));
          }
          return it->second;
        }
        auto it = inner.sinks.find(p.port);
        if (it == inner.sinks.end()) {
          throw WorkflowError(at, key, fmt::format("Could not find sink '{}' in inner workflow '{}'; sinks: {}", p.port,
                                                   task_name, fmt::join(inner.sink_order, ", ")));
        }
        return {it->second};
      }
      const OpDefinition* op = find_op(task->op);
      const bool ok = as_input ? op->input(p.port) != nullptr : op->output(p.port) != nullptr;
      if (!ok) {
        std::vector<std::string> ports;
        for (const auto& port : as_input ? op->inputs : op->outputs) ports.push_back(port.name);
        throw WorkflowError(at, key,
                            fmt::format("Port {} could not be found as {} of op {}; its {}s: {}", p.port,
                                        as_input ? "input" : "output", op->name, as_input ? "input" : "output",
                                        fmt::join(ports, ", ")));
      }
      return {PortRef{prefix + p.node, p.port}};
    };

    for (const auto& [name, targets] : spec.sources) {
      out.source_order.push_back(name);
      auto& mapped = out.sources[name];
      for (const std::string& t : targets) {
        for (PortRef& r : targets_of(t, spec.where("sources." + name), "sources." + name, true)) mapped.push_back(r);
      }
    }
    for (const auto& [name, port] : spec.sinks) {
      out.sink_order.push_back(name);
      out.sinks[name] = targets_of(port, spec.where("sinks." + name), "sinks." + name, false).front();
    }
    int index = 0;
    for (const EdgeSpec& e : spec.edges) {
      const std::string key = fmt::format("edges[{}]", index++);
      const PortRef origin = targets_of(e.origin, e.origin_at, key + ".origin", false).front();
      for (const std::string& d : e.destinations) {
        for (const PortRef& dest : targets_of(d, e.destination_at, key + ".destination", true)) {
          out.edges.push_back(GraphEdge{origin, dest});
        }
      }
    }
    stack.pop_back();
    return out;
  }

 private:
  static std::string known_names(const WorkflowSpec& spec) {
    std::vector<std::string> names;
    for (const auto& p : spec.parameters) names.push_back(p.first);
    return names.empty() ? "(none)" : fmt::format("{}", fmt::join(names, ", "));
  }

  static std::string task_names(const WorkflowSpec& spec) {
    std::vector<std::string> names;
    for (const auto& t : spec.tasks) names.push_back(t.name);
    return fmt::format("{}", fmt::join(names, ", "));
  }

  static void check_parameter_mapping(const WorkflowSpec& spec) {
    std::set<std::string> referenced;
    for (const TaskNodeSpec& t : spec.tasks) {
      for (const auto& item : t.parameters.items()) {
        std::set<std::string> refs;
        try {
          collect_references(item.value(), refs);
        } catch (const InputError& e) {
          throw WorkflowError(t.parameter_at.at(item.key()), "tasks." + t.name + ".parameters." + item.key(), e.what());
        }
        for (const std::string& r : refs) {
          if (!spec.has_parameter(r)) {
            throw WorkflowError(t.parameter_at.at(item.key()), "tasks." + t.name + ".parameters." + item.key(),
                                fmt::format("Task parameters reference undefined workflow parameter '{}'; declare "
                                            "it under parameters (known: {})",
                                            r, known_names(spec)));
          }
          referenced.insert(r);
        }
      }
    }
    for (const auto& [name, value] : spec.parameters) {
      if (!referenced.count(name)) {
        throw WorkflowError(spec.where("parameters." + name), "parameters." + name,
                            fmt::format("Workflow parameter '{}' is not mapped to any task parameters; reference it "
                                        "as '@from({})' in a task or remove it",
                                        name, name));
      }
    }
  }

  // A task parameter's value with "@from(x)" replaced by the workflow's x; a
  // null workflow value falls through to `fallback` (the op default).
  static Json resolve_value(const WorkflowSpec& spec, const TaskNodeSpec& task, const std::string& key,
                            const Json& value, const Json& params, const Json& fallback) {
    if (value.is_object()) {
      Json out = Json::object();
      for (const auto& item : value.items()) {
        out[item.key()] = resolve_value(spec, task, key, item.value(),
                                        params, fallback.is_object() && fallback.contains(item.key())
                                                    ? fallback[item.key()] : Json());
      }
      return out;
    }
    const std::string ref = parameter_reference(value);
    if (ref.empty()) return value;
    const Json& v = params.at(ref);
    return v.is_null() ? fallback : v;
  }

  GraphNode make_op_node(const WorkflowSpec& spec, const TaskNodeSpec& task, const std::string& full,
                         const Json& params) {
    const std::string key = "tasks." + task.name;
    const OpDefinition* op = find_op(task.op);
    if (!op) {
      std::vector<std::string> names;
      for (const auto& o : builtin_ops()) names.push_back(o.name);
      throw WorkflowError(task.at, key + ".op",
                          fmt::format("unknown op '{}'; available ops: {} (see `nimbus ops list`)", task.op,
                                      fmt::join(names, ", ")));
    }
    if (!task.op_dir.empty() && task.op_dir != op->op_dir) {
      throw WorkflowError(task.at, key + ".op_dir",
                          fmt::format("op '{}' lives in op_dir '{}', not '{}'", op->name, op->op_dir, task.op_dir));
    }
    GraphNode node;
    node.name = full;
    node.op = op;
    node.at = task.at;
    node.parameters = Json::object();
    for (const ParamSpec& p : op->parameters) node.parameters[p.name] = p.default_value;
    for (const auto& item : task.parameters.items()) {
      const SourceLocation& at = task.parameter_at.at(item.key());
      const ParamSpec* p = op->parameter(item.key());
      if (!p) {
        std::vector<std::string> names;
        for (const auto& q : op->parameters) names.push_back(q.name);
        throw WorkflowError(at, key + ".parameters." + item.key(),
                            fmt::format("unknown parameter '{}' of op {}; its parameters: {}", item.key(), op->name,
                                        fmt::join(names, ", ")));
      }
      node.parameters[p->name] = resolve_value(spec, task, item.key(), item.value(), params, p->default_value);
    }
    try {
      node.parameters = resolve_parameters(op->parameters, node.parameters);
    } catch (const ParameterError& e) {
      const auto it = task.parameter_at.find(e.parameter());
      throw WorkflowError(it != task.parameter_at.end() ? it->second : task.at, key + ".parameters." + e.parameter(),
                          op_parameter_error(*op, e));
    }
    return node;
  }

  const WorkflowLibrary& library_;
  std::map<std::string, WorkflowSpec> specs_;
  std::size_t op_count_ = 0;
};

}  // namespace

bool data_type_is_a(const std::string& from, const std::string& to) {
  if (from == to) return true;
  auto it = type_parents().find(from);
  if (it == type_parents().end()) return false;
  for (const std::string& parent : it->second)
    if (data_type_is_a(parent, to)) return true;
  return false;
}

const GraphNode* WorkflowGraph::node(const std::string& n) const {
  for (const auto& x : nodes)
    if (x.name == n) return &x;
  return nullptr;
}

std::string WorkflowLibrary::resolve(const std::string& name_or_path) const {
  if (fs::is_regular_file(name_or_path)) return name_or_path;
  const fs::path candidate = fs::path(workflows_dir) / (name_or_path + ".yaml");
  if (fs::is_regular_file(candidate)) return candidate.string();
  throw InputError(fmt::format("workflow '{}' not found (no such file, nor {}); list them with `nimbus workflows "
                               "list`",
                               name_or_path, candidate.string()));
}

WorkflowGraph build_workflow_graph(const std::string& name_or_path, const Json& overrides,
                                   const WorkflowLibrary& library) {
  const std::string path = library.resolve(name_or_path);
  Builder builder(library);
  std::vector<std::string> stack;
  Expanded ex = builder.expand(path, overrides.is_null() ? Json::object() : overrides, "", stack);
  const WorkflowSpec& root = builder.load(path);
  const SourceLocation root_at{path, 0};

  WorkflowGraph g;
  g.name = root.name;
  g.path = path;
  for (const std::string& s : ex.source_order) g.sources.emplace_back(s, ex.sources[s]);
  for (const std::string& s : ex.sink_order) g.sinks.emplace_back(s, ex.sinks[s]);
  g.edges = ex.edges;

  // Every op input fed exactly once.
  std::map<std::string, std::string> fed_by;
  const auto feed = [&](const PortRef& dest, const std::string& by, const SourceLocation& at, const std::string& key) {
    auto [it, inserted] = fed_by.emplace(dest.str(), by);
    if (!inserted) {
      throw WorkflowError(at, key, fmt::format("Tried to attach input port {} to {}, but it is already attached to {}",
                                               dest.str(), by, it->second));
    }
  };
  for (const auto& [name, targets] : g.sources) {
    for (const PortRef& t : targets) feed(t, "source " + name, root.where("sources." + name), "sources." + name);
  }
  for (const GraphEdge& e : g.edges) {
    feed(e.destination, e.origin.str(), root.where("edges"), "edges");
    const GraphNode* from = nullptr;
    const GraphNode* to = nullptr;
    for (const auto& n : ex.nodes) {
      if (n.name == e.origin.node) from = &n;
      if (n.name == e.destination.node) to = &n;
    }
    const std::string& t1 = from->op->output(e.origin.port)->type;
    const std::string& t2 = to->op->input(e.destination.port)->type;
    if (!data_type_is_a(t1, t2)) {
      throw WorkflowError(root.where("edges"), "edges",
                          fmt::format("Incompatible types for edge \"{}\" ({}) -> \"{}\" ({})", e.origin.str(), t1,
                                      e.destination.str(), t2));
    }
  }
  for (const GraphNode& n : ex.nodes) {
    for (const PortSpec& in : n.op->inputs) {
      if (!fed_by.count(n.name + "." + in.name)) {
        throw WorkflowError(n.at, "tasks." + n.name,
                            fmt::format("Operation ports '{}.{}' missing inputs. All tasks in a workflow must have "
                                        "all their inputs filled: connect it to a source or an edge",
                                        n.name, in.name));
      }
    }
  }
  // Sources feeding several ports need one most specific type.
  for (const auto& [name, targets] : g.sources) {
    std::vector<std::string> types;
    for (const PortRef& t : targets) {
      for (const auto& n : ex.nodes)
        if (n.name == t.node) types.push_back(n.op->input(t.port)->type);
    }
    const bool ok = std::any_of(types.begin(), types.end(), [&](const std::string& cand) {
      return std::all_of(types.begin(), types.end(), [&](const std::string& o) { return data_type_is_a(cand, o); });
    });
    if (!ok) {
      throw WorkflowError(root.where("sources." + name), "sources." + name,
                          fmt::format("Workflow source '{}' contains incompatible types: {}", name,
                                      fmt::join(types, ", ")));
    }
  }

  // Topological order (Kahn); what remains is a cycle.
  std::map<std::string, int> indegree;
  std::map<std::string, std::vector<std::string>> next;
  for (const auto& n : ex.nodes) indegree[n.name] = 0;
  std::set<std::pair<std::string, std::string>> seen;
  for (const GraphEdge& e : g.edges) {
    if (seen.insert({e.origin.node, e.destination.node}).second) {
      ++indegree[e.destination.node];
      next[e.origin.node].push_back(e.destination.node);
    }
  }
  std::vector<std::string> ready;
  for (const auto& n : ex.nodes)
    if (indegree[n.name] == 0) ready.push_back(n.name);
  std::vector<std::string> order;
  while (!ready.empty()) {
    const std::string n = ready.front();
    ready.erase(ready.begin());
    order.push_back(n);
    for (const std::string& m : next[n])
      if (--indegree[m] == 0) ready.push_back(m);
  }
  if (order.size() != ex.nodes.size()) {
    std::vector<std::string> cyclic;
    for (const auto& [n, d] : indegree)
      if (d > 0) cyclic.push_back(n);
    throw WorkflowError(root.where("edges"), "edges",
                        fmt::format("Workflows should be Directed Acyclic Graphs, but workflow {} has a cycle through "
                                    "tasks {}; remove one of those edges",
                                    root.name, fmt::join(cyclic, ", ")));
  }
  for (const std::string& n : order) {
    for (const auto& x : ex.nodes)
      if (x.name == n) g.nodes.push_back(x);
  }
  return g;
}

}  // namespace nimbus
