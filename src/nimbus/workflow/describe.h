// Human-readable views of workflows and ops: listing, descriptions, Mermaid graphs.
#pragma once

#include <string>
#include <vector>

#include "nimbus/ops/op_definition.h"
#include "nimbus/workflow/workflow_graph.h"

namespace nimbus {

// Workflow names under `dir` (relative paths without .yaml), sorted.
std::vector<std::string> list_workflows(const std::string& dir);

// The workflow's Mermaid graph, in the same form as FarmVibes' docs.
std::string workflow_mermaid(const WorkflowSpec& spec);

// Description, sources, sinks, parameters (with effective defaults), tasks and the Mermaid graph.
std::string describe_workflow(const std::string& name_or_path, const WorkflowLibrary& library);

// An op's ports, parameters (type, default, help) and cache dependencies.
std::string describe_op(const OpDefinition& op);

// A declared operation (improve-cloud-mask): its parameters, CLI flags and tags.
std::string describe_operation(const OperationSpec& operation);

}  // namespace nimbus
