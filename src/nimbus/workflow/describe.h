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

// The workflow as FarmVibes' REST API describes it (GET /v0/workflows/<name>): name,
// inputs and outputs as qualified Python type names, parameters with their effective
// defaults (an array when the tasks they feed differ), and the description (sources and
// sinks renamed inputs and outputs, task_descriptions from the ops).
Json describe_workflow_json(const std::string& name_or_path, const WorkflowLibrary& library);

// FarmVibes' qualified Python name of a data type ("vibe_core.data.sentinel.Sentinel2Raster").
std::string farmvibes_type_name(const std::string& data_type);

// An op's ports, parameters (type, default, help) and cache dependencies.
std::string describe_op(const OpDefinition& op);

// A declared operation (improve-cloud-mask): its parameters, CLI flags and tags.
std::string describe_operation(const OperationSpec& operation);

}  // namespace nimbus
