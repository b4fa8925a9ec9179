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
  // FarmVibes' run geometry: a GeoJSON file or text (geometry, Feature or
  // FeatureCollection) or WKT, Polygon or MultiPolygon, in `geometry_crs`. When set,
  // every op computes only the pixels the geometry's window needs (the chips it
  // touches, grown by the merge's halo) and the sinks are that window, cut from the
  // sources' grid exactly as improve-cloud-mask --aoi cuts it.
  std::string geometry;
  std::string geometry_crs = "EPSG:4326";
  std::string cache_dir;  // empty = no cache (ops run in a scratch directory)
  int max_parallel_tasks = 2;
  // Replace existing sink files in out_dir; otherwise they are refused before any task runs.
  bool overwrite = false;
  // Polled from the calling thread about every 100 ms; true stops the run (running
  // tasks stop at their next chip), discards its work and throws Cancelled.
  CancelCheck cancel;
  // Called from the task's thread when a task starts (before its cache lookup), for
  // front ends that report per-task progress (the REST service's task_details).
  std::function<void(const std::string& node)> on_task_started;
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
  // Task -> the model it runs (its model_path, resolved against root_dir):
  // "embedded:<name>" for Nimbus' own (the default), else a file such as FarmVibes'.
  std::map<std::string, std::string> models;
};

using TaskEvent = std::function<void(const TaskRun&)>;

// Checks the inputs against the graph's sources, then runs. On failure no sink
// file is written and no cache entry is left half-written.
RunReport run_workflow(const WorkflowGraph& graph, const RunOptions& options, const TaskEvent& on_task_done = {});

}  // namespace nimbus
