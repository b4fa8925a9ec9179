// A workflow flattened to op nodes: nested workflows expanded (dotted names),
// parameters resolved, and the whole graph validated before any pixel is read.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "nimbus/ops/op_definition.h"
#include "nimbus/workflow/workflow_spec.h"

namespace nimbus {

struct PortRef {
  std::string node;
  std::string port;
  std::string str() const { return node + "." + port; }
};

struct GraphNode {
  std::string name;  // dotted for nested workflows, e.g. "masks.cloud"
  const OpDefinition* op = nullptr;
  Json parameters;  // every op parameter, resolved
  SourceLocation at;
};

struct GraphEdge {
  PortRef origin;
  PortRef destination;
};

struct WorkflowGraph {
  std::string name;
  std::string path;
  std::vector<GraphNode> nodes;  // in topological order
  std::vector<GraphEdge> edges;
  std::vector<std::pair<std::string, std::vector<PortRef>>> sources;
  std::vector<std::pair<std::string, PortRef>> sinks;

  const GraphNode* node(const std::string& name) const;
};

// Where nested workflows are looked up by name: <dir>/<name>.yaml.
struct WorkflowLibrary {
  std::string workflows_dir;
  // A name ("data_ingestion/sentinel2/improve_cloud_mask") or a path to a .yaml file.
  std::string resolve(const std::string& name_or_path) const;
};

// Parses, expands and validates. `overrides` are run-time values for the root
// workflow's parameters (unknown names are an error). Throws WorkflowError /
// InputError naming the YAML file, line and key.
WorkflowGraph build_workflow_graph(const std::string& name_or_path, const Json& overrides,
                                   const WorkflowLibrary& library);

// Whether `from` can feed a port of type `to` (FarmVibes' data type hierarchy).
bool data_type_is_a(const std::string& from, const std::string& to);

}  // namespace nimbus
