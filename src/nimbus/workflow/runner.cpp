#include "nimbus/workflow/runner.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <filesystem>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "nimbus/core/checksum.h"
#include "nimbus/core/input_files.h"
#include "nimbus/raster/area_of_interest.h"
#include "nimbus/core/log.h"
#include "nimbus/raster/raster_reader.h"
#include "nimbus/inference/onnx_model.h"
#include "nimbus/raster/atomic_output.h"
#include "nimbus/workflow/cache.h"

namespace nimbus {
namespace fs = std::filesystem;
namespace {

void copy_into(const std::string& from, const AtomicOutput& out) {
  std::error_code ec;
  fs::copy_file(from, out.temp_path(), fs::copy_options::overwrite_existing, ec);
  if (ec) {
    throw InputError(fmt::format("cannot write '{}' ({}); check disk space and permissions", out.final_path(),
                                 ec.message()));
  }
}

std::vector<RunInput> run_inputs(const RunOptions& options) {
  std::vector<RunInput> inputs;
  for (const auto& [name, path] : options.inputs) inputs.push_back({path, fmt::format("--input {}", name)});
  return inputs;
}

std::string sink_role(const std::string& sink) { return fmt::format("--out-dir (sink {})", sink); }

// Checks the source files before any task runs, naming the user's files rather
// than intermediate results: each op's input checks on the ports sources feed, then
// grids: each source's grid is followed through the graph (an op's output has the
// grid of one of its inputs) and, where an op needs inputs on one grid that come
// from different sources, those sources' grids are compared.
void check_sources_before_any_task(const WorkflowGraph& graph, const std::map<std::string, std::string>& inputs) {
  std::map<std::string, std::string> grid_source;  // "node.port" -> source name
  for (const auto& [name, targets] : graph.sources) {
    for (const PortRef& t : targets) grid_source[t.str()] = name;
  }
  for (const auto& [name, targets] : graph.sources) {
    for (const PortRef& t : targets) {
      const GraphNode* node = graph.node(t.node);
      if (!node) continue;
      const auto check = node->op->input_checks.find(t.port);
      if (check == node->op->input_checks.end()) continue;
      check->second(inputs.at(name), fmt::format("--input {} (input {} of task '{}')", name, t.port, t.node));
    }
  }
  for (const GraphNode& node : graph.nodes) {  // topological order
    std::map<std::string, std::string> sources;  // source name -> input port
    for (const std::string& port : node.op->same_grid_inputs) {
      if (auto it = grid_source.find(node.name + "." + port); it != grid_source.end()) sources.emplace(it->second, port);
    }
    if (sources.size() >= 2) {
      const auto role = [&](const std::string& source, const std::string& port) {
        return fmt::format("--input {} (input {} of task '{}')", source, port, node.name);
      };
      const auto first = sources.begin();
      const RasterReader reference(inputs.at(first->first), role(first->first, first->second));
      for (auto it = std::next(first); it != sources.end(); ++it) {
        const RasterReader other(inputs.at(it->first), role(it->first, it->second));
        require_same_grid(reference, other);
      }
    }
    for (const auto& [out, in] : node.op->output_grid_of) {
      const auto it = grid_source.find(node.name + "." + in);
      if (it == grid_source.end()) continue;
      for (const GraphEdge& e : graph.edges) {
        if (e.origin.node == node.name && e.origin.port == out) grid_source[e.destination.str()] = it->second;
      }
    }
  }
}

// An area-of-interest message, with the run's parameter names (geometry, geometry_crs).
std::string as_geometry_message(std::string text) {
  for (const auto& [from, to] : {std::pair<std::string, std::string>{"@[aoi_crs]", "@[geometry_crs]"},
                                 {"@[aoi]", "@[geometry]"}}) {
    for (auto at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size())) {
      text.replace(at, from.size(), to);
    }
  }
  return text;
}

// With a run geometry: the window each node computes. The geometry's pixel window on
// the sources' grid (snapped and clamped as improve-cloud-mask --aoi does) is what the
// sinks hold; each node's window is grown by the halos of the nodes downstream of it.
std::map<std::string, RunWindow> node_windows(const WorkflowGraph& graph, const RunOptions& options) {
  std::map<std::string, RunWindow> windows;
  if (options.geometry.empty()) return windows;
  if (graph.sources.empty()) throw InputError("@[geometry] needs a workflow with a source raster");
  const std::string& source = graph.sources.begin()->first;
  const RasterReader raster(options.inputs.at(source), fmt::format("--input {}", source));
  PixelWindow out;
  try {
    const AreaOfInterest aoi = AreaOfInterest::parse(options.geometry, "", options.geometry_crs);
    out = aoi.pixel_window(raster.grid(), fmt::format("{} '{}'", raster.role(), raster.path()));
  } catch (const InputError& e) {
    throw InputError(as_geometry_message(e.what()));
  }
  // Reverse topological order: a node's margin is the largest its consumers need.
  std::map<std::string, long> margin;
  for (auto node = graph.nodes.rbegin(); node != graph.nodes.rend(); ++node) {
    long m = 0;
    for (const GraphEdge& e : graph.edges) {
      if (e.origin.node != node->name) continue;
      const GraphNode* consumer = graph.node(e.destination.node);
      if (!consumer) continue;
      const long halo = consumer->op->area_halo ? consumer->op->area_halo(consumer->parameters) : 0;
      m = std::max(m, margin[consumer->name] + halo);
    }
    margin[node->name] = m;
  }
  const int largest = std::max(raster.width(), raster.height());
  for (const GraphNode& node : graph.nodes) {
    const int grow = static_cast<int>(std::min<long>(margin[node.name], largest));
    windows[node.name] = RunWindow{out.grown(grow, raster.width(), raster.height()), raster.width(), raster.height()};
  }
  return windows;
}

}  // namespace

RunReport run_workflow(const WorkflowGraph& graph, const RunOptions& options, const TaskEvent& on_task_done) {
  // Inputs must match the sources exactly.
  std::vector<std::string> source_names;
  for (const auto& [name, targets] : graph.sources) source_names.push_back(name);
  for (const auto& [name, path] : options.inputs) {
    if (std::find(source_names.begin(), source_names.end(), name) == source_names.end()) {
      throw InputError(fmt::format("--input {}=...: workflow {} has no source '{}'; its sources: {}", name, graph.name,
                                   name, fmt::join(source_names, ", ")));
    }
  }
  std::map<std::string, Artifact> port_values;  // "node.port" -> artifact
  for (const auto& [name, targets] : graph.sources) {
    auto it = options.inputs.find(name);
    if (it == options.inputs.end()) {
      throw InputError(fmt::format("workflow {} needs --input {}=FILE (sources: {})", graph.name, name,
                                   fmt::join(source_names, ", ")));
    }
    require_not_special_file(it->second, fmt::format("--input {}", name));
    if (fs::is_directory(it->second)) {
      throw InputError(fmt::format("--input {}='{}' is a directory; pass a raster file", name, it->second));
    }
    if (!fs::is_regular_file(it->second)) {
      throw InputError(fmt::format("--input {}='{}': file does not exist; check the path", name, it->second));
    }
    const Artifact a{it->second, "", file_artifact_id(it->second)};
    for (const PortRef& t : targets) port_values[t.str()] = a;
  }
  check_sources_before_any_task(graph, options.inputs);
  const std::map<std::string, RunWindow> windows = node_windows(graph, options);
  if (options.out_dir.empty()) throw InputError("no output directory; pass --out-dir DIR");
  {
    // Sinks are written as <out_dir>/<sink>.tif: refuse up front what would replace an input.
    const InputFiles inputs(run_inputs(options));
    inputs.check_not_an_input(options.out_dir, "--out-dir");
    for (const auto& [sink, port] : graph.sinks) {
      inputs.check_not_an_input((fs::path(options.out_dir) / (sink + ".tif")).string(), sink_role(sink));
    }
  }
  ensure_directory(options.out_dir, "--out-dir");
  for (const auto& [sink, port] : graph.sinks) {  // e.g. <out_dir>/mask.tif is a directory or a FIFO
    check_output_path((fs::path(options.out_dir) / (sink + ".tif")).string(), sink_role(sink),
                      OutputRules{options.overwrite, false});
  }

  const bool use_cache = !options.cache_dir.empty();
  const std::string scratch = use_cache ? options.cache_dir : (fs::path(options.out_dir) / ".nimbus-work").string();
  const OpCache cache(scratch);

  // Dependencies between nodes.
  std::map<std::string, std::set<std::string>> waiting_on;
  for (const auto& n : graph.nodes) waiting_on[n.name];
  for (const GraphEdge& e : graph.edges) waiting_on[e.destination.node].insert(e.origin.node);

  RunReport report;
  for (const GraphNode& node : graph.nodes) {
    if (!node.parameters.contains("model_path") || !node.parameters["model_path"].is_string()) continue;
    const std::string model = node.parameters["model_path"].get<std::string>();
    std::string resolved = model;
    if (model.rfind("embedded:", 0) != 0 && !fs::path(model).is_absolute() && node.parameters.contains("root_dir") &&
        node.parameters["root_dir"].is_string()) {
      resolved = (fs::path(node.parameters["root_dir"].get<std::string>()) / model).string();
    }
    report.models[node.name] = resolved;
    if (resolved.rfind("embedded:", 0) == 0) {
      logger()->info("task {}: model {} (Nimbus' embedded model; give the workflow's model parameter, e.g. a path to "
                     "FarmVibes' file, to run another)",
                     node.name, resolved);
    } else {
      logger()->info("task {}: model {}", node.name, resolved);
    }
  }
  std::mutex mu;
  std::condition_variable cv;
  std::set<std::string> done, started;
  int running = 0;
  std::exception_ptr failure;
  std::atomic<bool> cancelled{false};

  const auto run_node = [&](const GraphNode& node) {
    if (options.on_task_started) options.on_task_started(node.name);
    TaskRun tr;
    tr.node = node.name;
    tr.op = node.op->name;
    const auto t0 = std::chrono::steady_clock::now();
    OpRunContext ctx;
    ctx.task = node.name;
    ctx.parameters = node.parameters;
    ctx.cancel = [&cancelled] { return cancelled.load(); };
    if (const auto w = windows.find(node.name); w != windows.end()) ctx.window = w->second;
    std::map<std::string, std::string> ids;
    {
      std::lock_guard<std::mutex> lock(mu);
      for (const PortSpec& in : node.op->inputs) {
        ctx.inputs[in.name] = port_values.at(node.name + "." + in.name);
        ids[in.name] = ctx.inputs[in.name].id;
      }
    }
    tr.cache_key = cache_key(*node.op, ids, node.parameters, ctx.window);
    std::optional<OpOutputs> outputs = use_cache ? cache.lookup(node.op->name, tr.cache_key) : std::nullopt;
    tr.cache_hit = outputs.has_value();
    if (!outputs) {
      ctx.output_dir = cache.begin(node.op->name, tr.cache_key);
      OpOutputs produced;
      try {
        produced = node.op->run(ctx);
      } catch (...) {
        OpCache::discard(ctx.output_dir);
        throw;
      }
      for (auto& [port, a] : produced) a.id = sha256_hex(tr.cache_key + port);  // stable downstream keys
      outputs = use_cache ? cache.commit(node.op->name, tr.cache_key, ctx.output_dir, produced) : produced;
    }
    if (ctx.window) {
      for (auto& [port, a] : *outputs) a.window = ctx.window->pixels;
    }
    tr.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::lock_guard<std::mutex> lock(mu);
    for (const GraphEdge& e : graph.edges) {
      if (e.origin.node == node.name) port_values[e.destination.str()] = outputs->at(e.origin.port);
    }
    for (const auto& [port, a] : *outputs) port_values[node.name + "." + port] = a;
    report.tasks.push_back(tr);
    if (on_task_done) on_task_done(tr);
  };

  std::vector<std::thread> threads;
  {
    std::unique_lock<std::mutex> lock(mu);
    while (done.size() < graph.nodes.size()) {
      if (failure && running == 0) break;
      const GraphNode* ready = nullptr;
      if (!failure && running < std::max(1, options.max_parallel_tasks)) {
        for (const auto& n : graph.nodes) {
          if (started.count(n.name)) continue;
          const auto& deps = waiting_on[n.name];
          if (std::all_of(deps.begin(), deps.end(), [&](const std::string& d) { return done.count(d) > 0; })) {
            ready = &n;
            break;
          }
        }
      }
      if (!ready) {
        if (!options.cancel) {
          cv.wait(lock);
          continue;
        }
        cv.wait_for(lock, std::chrono::milliseconds(100));
        if (!cancelled.load()) {
          lock.unlock();  // the check may take a while (Python takes its GIL)
          const bool stop = options.cancel();
          lock.lock();
          if (stop) {
            cancelled.store(true);
            if (!failure) failure = std::make_exception_ptr(Cancelled());
          }
        }
        continue;
      }
      started.insert(ready->name);
      ++running;
      threads.emplace_back([&, ready] {
        std::exception_ptr err;
        try {
          run_node(*ready);
        } catch (...) {
          err = std::current_exception();
        }
        std::lock_guard<std::mutex> g(mu);
        if (err && !failure) failure = err;
        if (!err) done.insert(ready->name);
        --running;
        cv.notify_all();
      });
    }
  }
  for (auto& t : threads) t.join();
  if (failure) {
    if (!use_cache) OpCache::discard(scratch);
    std::rethrow_exception(failure);
  }

  // Publish sinks only once everything succeeded, all together.
  OutputSet published(run_inputs(options), OutputRules{options.overwrite, false});
  for (const auto& [sink, port] : graph.sinks) {
    const Artifact& a = port_values.at(port.str());
    const std::string dest = (fs::path(options.out_dir) / (sink + fs::path(a.path).extension().string())).string();
    copy_into(a.path, published.add_file(dest, sink_role(sink)));
    report.outputs[sink] = dest;
  }
  published.commit();
  if (!use_cache) OpCache::discard(scratch);
  return report;
}

}  // namespace nimbus
