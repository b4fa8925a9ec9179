// Workflow YAML files as written (FarmVibes' workflow language), with the file
// and line of every element so errors can point at them.
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "nimbus/core/error.h"

namespace nimbus {

using Json = nlohmann::json;

struct SourceLocation {
  std::string file;
  int line = 0;  // 1-based; 0 when unknown
  std::string str() const { return line > 0 ? file + ":" + std::to_string(line) : file; }
};

// A workflow definition error: "<file>:<line>: <key>: <problem>; <fix>".
class WorkflowError : public InputError {
 public:
  WorkflowError(const SourceLocation& at, const std::string& key, const std::string& message)
      : InputError(at.str() + ": " + key + ": " + message) {}
};

struct TaskNodeSpec {
  std::string name;
  std::string op;        // op tasks
  std::string op_dir;    // op tasks, optional
  std::string workflow;  // nested workflow tasks
  Json parameters = Json::object();  // values may be "@from(param)" references
  SourceLocation at;
  std::map<std::string, SourceLocation> parameter_at;
};

struct EdgeSpec {
  std::string origin;
  std::vector<std::string> destinations;
  SourceLocation at;              // the edge's first line
  SourceLocation origin_at;       // its origin value
  SourceLocation destination_at;  // its destination list
};

struct WorkflowSpec {
  std::string name;
  std::string path;
  std::vector<std::pair<std::string, std::vector<std::string>>> sources;
  std::vector<std::pair<std::string, std::string>> sinks;
  std::vector<std::pair<std::string, Json>> parameters;  // in file order; null = no default here
  std::vector<TaskNodeSpec> tasks;
  std::vector<EdgeSpec> edges;
  Json description = Json::object();
  std::map<std::string, SourceLocation> at;  // "sources.<s>", "sinks.<s>", "parameters.<p>", "name", ...

  SourceLocation where(const std::string& key) const;
  const TaskNodeSpec* task(const std::string& name) const;
  bool has_parameter(const std::string& name) const;
};

// Parses and checks the structure of a workflow YAML file (keys, field types).
// Throws WorkflowError (file, line, key) on any problem.
WorkflowSpec parse_workflow_file(const std::string& path);

// Converts a YAML scalar text the way PyYAML would (null, bool, int, float, else string).
Json yaml_scalar_to_json(const std::string& text);

// "@from(x)" -> "x" (FarmVibes: anchored at the start, greedy); empty when not a reference.
// Throws InputError for an empty reference "@from()".
std::string parameter_reference(const Json& value);

}  // namespace nimbus
