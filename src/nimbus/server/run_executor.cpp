#include "nimbus/server/run_executor.h"

#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <filesystem>

#include <fmt/format.h>

#include "nimbus/core/log.h"
#include "nimbus/parameters.h"
#include "nimbus/raster/atomic_output.h"
#include "nimbus/raster/preview.h"
#include "nimbus/raster/raster_reader.h"
#include "nimbus/server/clock_and_ids.h"
#include "nimbus/server/input_paths.h"
#include "nimbus/server/run_outputs.h"
#include "nimbus/workflow/runner.h"
#include "nimbus/workflow/workflow_graph.h"

namespace nimbus::server {
namespace fs = std::filesystem;
namespace {

constexpr int kCancelRequested = 1;
constexpr int kServerStopping = 2;
constexpr const char* kCancelReason = "Cancellation requested by user";
constexpr const char* kDeleteReason = "Deletion requested by user";

// Status precedence when a task aggregates its subtasks (spec 4.2).
int activity_rank(const std::string& s) {
  if (s == status::kFailed) return 5;
  if (s == status::kCancelled) return 4;
  if (s == status::kRunning) return 3;
  if (s == status::kQueued) return 2;
  if (s == status::kPending) return 1;
  return 0;  // done
}

OJson aggregate(const std::vector<OJson>& subtasks) {
  OJson task = run_details(status::kDone);
  std::string best = status::kDone;
  bool all_ended = true;
  for (const OJson& s : subtasks) {
    const std::string st = s["status"].get<std::string>();
    if (activity_rank(st) > activity_rank(best)) {
      best = st;
      task["reason"] = s["reason"];
    }
    for (const char* key : {"submission_time", "start_time"}) {
      if (!s[key].is_null() && (task[key].is_null() || s[key].get<std::string>() < task[key].get<std::string>()))
        task[key] = s[key];
    }
    if (s["end_time"].is_null()) {
      all_ended = false;
    } else if (task["end_time"].is_null() || s["end_time"].get<std::string>() > task["end_time"].get<std::string>()) {
      task["end_time"] = s["end_time"];
    }
  }
  if (!all_ended) task["end_time"] = nullptr;
  task["status"] = best;
  task["subtasks"] = subtasks;
  return task;
}

std::string error_reason(const std::exception& e) {
  const char* kind = dynamic_cast<const InputError*>(&e) ? "InputError"
                     : dynamic_cast<const InternalError*>(&e) ? "InternalError"
                                                              : "RuntimeError";
  return fmt::format("{}: {}", kind, spell_parameters(e.what(), [](const std::string& n) { return n; }));
}

// A small PNG of the mask over the scene's true colour, for the page; best effort.
void write_quicklook(const std::string& scene_path, const std::string& mask_path, const std::string& png) {
  try {
    const RasterReader scene(scene_path, "s2_raster");
    const RasterReader mask_reader(mask_path, "mask");
    if (mask_reader.width() != scene.width() || mask_reader.height() != scene.height()) return;
    const FloatBuffer values = mask_reader.read_band(1);
    // The mask's own nodata tag (100 as FarmVibes writes it, or --nodata-value's).
    const float nodata_value = static_cast<float>(mask_reader.nodata_value().value_or(100.0));
    MaskBuffer classes(values.size(), kPreviewClear);
    for (std::size_t i = 0; i < values.size(); ++i) {
      classes[i] = values[i] == nodata_value ? kPreviewNodata : values[i] != 0.0f ? kPreviewCloud : kPreviewClear;
    }
    const Preview preview =
        render_mask_preview(scene, PixelWindow{0, 0, scene.width(), scene.height()}, classes, 384);
    write_whole_file(png, "quicklook", preview.png);
  } catch (const std::exception& e) {
    logger()->warn("quicklook {}: {}", png, e.what());
    std::error_code ec;
    fs::remove(png, ec);
  }
}

}  // namespace

RunExecutor::RunExecutor(const ServerConfig& config, RunStore& store) : config_(config), store_(store) {}

RunExecutor::~RunExecutor() { stop(); }

std::string RunExecutor::run_dir(const std::string& id) const {
  return (fs::path(config_.data_dir) / "runs" / id).string();
}

std::vector<std::string> RunExecutor::recover() {
  std::vector<std::string> failed;
  std::error_code ec;
  const fs::path runs = fs::path(config_.data_dir) / "runs";
  fs::create_directories(runs, ec);
  for (auto it = fs::directory_iterator(runs, ec); !ec && it != fs::directory_iterator(); ++it) {
    if (it->path().extension() == ".partial") fs::remove_all(it->path(), ec);
  }
  for (const RunRecord& r : store_.all()) {
    const std::string s = r.status();
    if (s == status::kQueued || s == status::kRunning) {
      // Executing when the previous server died: whatever it had published is removed.
      std::error_code rec;
      fs::remove_all(run_dir(r.id), rec);
      store_.modify(r.id, [&](RunRecord& run) {
        const std::string now = utc_timestamp_now();
        const std::string reason =
            "ServerRestart: the server stopped while this run was executing; no output was kept. Resubmit it.";
        run.details["status"] = status::kFailed;
        run.details["reason"] = reason;
        run.details["end_time"] = now;
        run.output = OJson::object();
        for (auto& [task, d] : run.task_details.items()) {
          if (d.is_object() && d["subtasks"].is_array()) {
            for (OJson& sub : d["subtasks"]) {
              if (!is_finished(sub["status"].get<std::string>())) {
                sub["status"] = status::kFailed;
                sub["reason"] = reason;
                sub["end_time"] = now;
              }
            }
            std::vector<OJson> subs(d["subtasks"].begin(), d["subtasks"].end());
            d = aggregate(subs);
          }
        }
      });
      failed.push_back(r.id);
    } else if (s == status::kDeleting) {
      delete_outputs(r.id);
    } else if (s == status::kPending) {
      std::lock_guard<std::mutex> lock(mu_);
      queue_.push_back(r.id);  // restart: no bound, these were accepted already
    }
  }
  return failed;
}

void RunExecutor::start() {
  std::lock_guard<std::mutex> lock(mu_);
  stopping_ = false;
  for (int i = 0; i < std::max(1, config_.concurrent_runs); ++i) workers_.emplace_back([this] { worker(); });
}

void RunExecutor::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (workers_.empty()) return;
    stopping_ = true;
    for (auto& [id, flag] : executing_) *flag = kServerStopping;
  }
  cv_.notify_all();
  for (auto& t : workers_) t.join();
  workers_.clear();
}

bool RunExecutor::queue_full() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int>(queue_.size()) >= config_.max_pending_runs;
}

bool RunExecutor::enqueue(const std::string& id) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (static_cast<int>(queue_.size()) >= config_.max_pending_runs) return false;
    queue_.push_back(id);
  }
  cv_.notify_one();
  return true;
}

void RunExecutor::cancel(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  if (const auto it = executing_.find(id); it != executing_.end()) {
    *it->second = kCancelRequested;
    return;
  }
  const auto q = std::find(queue_.begin(), queue_.end(), id);
  if (q != queue_.end()) queue_.erase(q);
  store_.modify(id, [](RunRecord& run) {
    if (run.status() != status::kPending) return;
    run.details["status"] = status::kCancelled;
    run.details["reason"] = kCancelReason;
    run.details["end_time"] = utc_timestamp_now();
  });
}

void RunExecutor::delete_outputs(const std::string& id) {
  store_.modify(id, [](RunRecord& run) {
    run.details["status"] = status::kDeleting;
    run.details["reason"] = kDeleteReason;
  });
  std::error_code ec;
  fs::remove_all(run_dir(id), ec);
  if (ec) {
    logger()->error("run {}: cannot remove its outputs: {}", id, ec.message());
    return;  // stays "deleting"; retried at the next start
  }
  store_.modify(id, [](RunRecord& run) {
    run.details["status"] = status::kDeleted;
    run.output = OJson::object();
  });
}

void RunExecutor::worker() {
  // Runs compute at a lower CPU priority than the threads answering requests (nice is
  // per thread on Linux and inherited by the inference threads this one starts), so
  // status polls stay fast while the cores are busy with runs.
  setpriority(PRIO_PROCESS, static_cast<id_t>(syscall(SYS_gettid)), 10);
  for (;;) {
    std::string id;
    std::shared_ptr<std::atomic<int>> flag;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      id = queue_.front();
      queue_.pop_front();
      flag = std::make_shared<std::atomic<int>>(0);
      executing_[id] = flag;
    }
    try {
      execute(id, flag);
    } catch (const std::exception& e) {
      logger()->error("run {}: {}", id, e.what());  // the store could not be written
    }
    std::lock_guard<std::mutex> lock(mu_);
    executing_.erase(id);
  }
}

void RunExecutor::execute(const std::string& id, const std::shared_ptr<std::atomic<int>>& flag) {
  const std::optional<RunRecord> stored = store_.get(id);
  if (!stored || stored->status() != status::kPending) return;
  const OJson plan = stored->plan;
  const OJson& pairs = plan["pairs"];
  const fs::path final_dir = run_dir(id);
  const fs::path partial = final_dir.string() + ".partial";
  std::error_code ec;
  fs::remove_all(partial, ec);
  fs::create_directories(partial);

  // Per task, one subtask per input pair; every change is published to the store.
  std::mutex tmu;
  std::vector<std::string> tasks;
  std::map<std::string, std::vector<OJson>> subs;
  std::size_t current_pair = 0;
  const auto publish = [&](const std::function<void(RunRecord&)>& also) {
    OJson details = OJson::object();
    bool any_running = false, any_queued = false;
    for (const std::string& t : tasks) {
      details[t] = aggregate(subs[t]);
      any_running |= details[t]["status"] == status::kRunning;
      any_queued |= details[t]["status"] == status::kQueued;
    }
    store_.modify(id, [&](RunRecord& run) {
      run.task_details = details;
      if (!is_finished(run.status())) run.details["status"] = any_running || !any_queued ? status::kRunning : status::kQueued;
      if (also) also(run);
    });
  };
  const auto set_sub = [&](const std::string& task, std::size_t i, const char* st, const char* time_key) {
    OJson& s = subs[task][i];
    s["status"] = st;
    if (time_key) s[time_key] = utc_timestamp_now();
  };

  logger()->info("run {} started", id);
  store_.modify(id, [&](RunRecord& run) {
    run.details["status"] = status::kQueued;
    run.details["start_time"] = utc_timestamp_now();
  });
  try {
    const WorkflowLibrary library{config_.workflows_dir};
    const WorkflowGraph graph =
        build_workflow_graph(plan["workflow"].get<std::string>(), Json::parse(plan["parameters"].dump()), library);
    {
      std::lock_guard<std::mutex> lock(tmu);
      for (const GraphNode& n : graph.nodes) {
        tasks.push_back(n.name);
        subs[n.name] = std::vector<OJson>(pairs.size(), run_details(status::kPending));
      }
      publish({});
    }
    const std::string cache_dir =
        config_.cache_dir.empty() ? (fs::path(config_.data_dir) / "cache").string() : config_.cache_dir;
    OJson outputs = OJson::object();
    for (const auto& [sink, port] : graph.sinks) outputs[sink] = OJson::array();
    for (std::size_t i = 0; i < pairs.size(); ++i) {
      if (flag->load() != 0) throw Cancelled();
      {
        std::lock_guard<std::mutex> lock(tmu);
        current_pair = i;
        for (const std::string& t : tasks) set_sub(t, i, status::kQueued, "submission_time");
        publish({});
      }
      RunOptions options;
      const CancelCheck cancelled = [flag] { return flag->load() != 0; };
      for (const auto& [source, entry] : pairs[i].items()) {
        std::string path = entry["href"].get<std::string>();
        if (entry["remote"].get<bool>()) {
          const fs::path inputs_dir = partial / "inputs";
          fs::create_directories(inputs_dir);
          std::string ext = fs::path(path.substr(0, path.find_first_of("?#"))).extension().string();
          if (ext.size() > 8 || ext.find_first_not_of(".abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") !=
                                    std::string::npos)
            ext = ".tif";
          const std::string local = (inputs_dir / fmt::format("{}-{}{}", i, source, ext)).string();
          download_asset(path, local, fmt::format("user_input.{} asset", source), cancelled);
          path = local;
        }
        options.inputs[source] = path;
      }
      options.out_dir = (partial / fmt::format("pair-{}", i)).string();
      options.cache_dir = cache_dir;
      options.max_parallel_tasks = config_.parallel_tasks;
      options.cancel = cancelled;
      options.on_task_started = [&, i](const std::string& node) {
        std::lock_guard<std::mutex> lock(tmu);
        set_sub(node, i, status::kRunning, "start_time");
        publish({});
      };
      const RunReport report = run_workflow(graph, options, [&, i](const TaskRun& t) {
        std::lock_guard<std::mutex> lock(tmu);
        set_sub(t.node, i, status::kDone, "end_time");
        publish({});
      });
      for (const auto& [sink, port] : graph.sinks) {
        const std::string& produced = report.outputs.at(sink);
        const std::string asset_id = new_uuid4();
        const std::string file = asset_id + fs::path(produced).extension().string();
        fs::rename(produced, partial / file);
        std::string sink_type = "DataVibe";
        for (const PortSpec& p : graph.node(port.node)->op->outputs)
          if (p.name == port.port) sink_type = p.type;
        // The item describes the scene of the first source (FarmVibes copies s2_raster's fields).
        const OJson& template_item = pairs[i].begin().value()["item"];
        outputs[sink].push_back(output_item(template_item, sink_type, asset_id, (final_dir / file).string()));
        if (sink_type == "Sentinel2CloudMask" || sink_type == "CloudMask") {
          write_quicklook(options.inputs.begin()->second, (partial / file).string(),
                          (partial / fmt::format("quicklook-{}-{}.png", sink, i)).string());
        }
      }
      fs::remove_all(options.out_dir, ec);
    }
    fs::remove_all(partial / "inputs", ec);
    if (flag->load() != 0) throw Cancelled();
    fs::remove_all(final_dir, ec);
    fs::rename(partial, final_dir);
    std::lock_guard<std::mutex> lock(tmu);
    publish([&](RunRecord& run) {
      run.output = outputs;
      run.details["status"] = status::kDone;
      run.details["end_time"] = utc_timestamp_now();
    });
    logger()->info("run {} done", id);
  } catch (const std::exception& e) {
    fs::remove_all(partial, ec);
    fs::remove_all(final_dir, ec);
    const bool is_cancel = dynamic_cast<const Cancelled*>(&e) != nullptr;
    std::lock_guard<std::mutex> lock(tmu);
    const std::string now = utc_timestamp_now();
    if (is_cancel && flag->load() == kServerStopping) {
      const OJson submitted = stored->details["submission_time"];
      store_.modify(id, [&](RunRecord& run) {  // executes again, from the start, after the restart
        run.details = run_details(status::kPending);
        run.details["submission_time"] = submitted;
        run.task_details = OJson::object();
      });
      return;
    }
    std::string reason, failed_task;
    if (is_cancel) {
      reason = kCancelReason;
    } else {
      reason = error_reason(e);
      // The task that failed: one still running in the current pair, else the first not done.
      for (const char* wanted : {status::kRunning, status::kQueued, status::kPending}) {
        for (const std::string& t : tasks) {
          if (failed_task.empty() && subs[t][current_pair]["status"] == wanted) failed_task = t;
        }
      }
      if (!failed_task.empty()) {
        OJson& s = subs[failed_task][current_pair];
        s["status"] = status::kFailed;
        s["reason"] = reason;
        s["end_time"] = now;
      }
    }
    const std::string others =
        is_cancel ? std::string(kCancelReason)
                  : fmt::format("Cancelled because task '{}' (subtask {}) failed", failed_task, current_pair);
    for (const std::string& t : tasks) {
      for (OJson& s : subs[t]) {
        if (is_finished(s["status"].get<std::string>())) continue;
        s["status"] = status::kCancelled;
        s["reason"] = others;
        s["end_time"] = now;
      }
    }
    publish([&](RunRecord& run) {
      run.details["status"] = is_cancel ? status::kCancelled : status::kFailed;
      run.details["reason"] = reason;
      run.details["end_time"] = now;
      run.output = OJson::object();
    });
    if (!is_cancel) logger()->info("run {} failed: {}", id, reason);
  }
}

}  // namespace nimbus::server
