// Runs a validated workflow graph: independent tasks concurrently, each op
// once per distinct cache key, sinks copied into the output directory.
#pragma once

#include "nimbus/core/error.h"

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "nimbus/workflow/workflow_graph.h"

namespace nimbus {

struct RunOptions {
  std::map<std::string, std::string> inputs;  // source name -> file
  std::string out_dir;
  std::string cache_dir;  // empty = no cache (ops run in a scratch directory)
  int max_parallel_tasks = 2;
  // Replace existing sink files in out_dir; otherwise they are refused before any task runs.
  bool overwrite = false;
  // Polled from the calling thread about every 100 ms; true stops the run (running
  // tasks stop at their next chip), discards its work and throws Cancelled.
  CancelCheck cancel;
};

struct TaskRun {
  std::string node;
  std::string op;
  std::string cache_key;
  bool cache_hit = false;
  double seconds = 0.0;
};

struct RunReport {
  std::vector<TaskRun> tasks;  // in completion order
  std::map<std::string, std::string> outputs;  // sink -> file in out_dir
};

using TaskEvent = std::function<void(const TaskRun&)>;

// Checks the inputs against the graph's sources, then runs. On failure no sink
// file is written and no cache entry is left half-written.
RunReport run_workflow(const WorkflowGraph& graph, const RunOptions& options, const TaskEvent& on_task_done = {});

}  // namespace nimbus
