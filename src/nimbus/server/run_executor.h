// Runs queued runs through the workflow engine: a bounded queue, a fixed number of
// worker threads, one private directory per run published atomically when the run
// is done. Models come from the process-wide model cache, so runs share them.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "nimbus/server/run_store.h"
#include "nimbus/server/server_config.h"

namespace nimbus::server {

class RunExecutor {
 public:
  RunExecutor(const ServerConfig& config, RunStore& store);
  ~RunExecutor();
  RunExecutor(const RunExecutor&) = delete;
  RunExecutor& operator=(const RunExecutor&) = delete;

  // Restart recovery, before start(): a run that was executing when the previous
  // server died is marked failed (its partial directory removed); pending runs are
  // queued again in creation order. Returns the ids marked failed.
  std::vector<std::string> recover();

  void start();
  // Stops the workers: executing runs are interrupted and go back to pending (they run
  // again, from the start, when the server restarts); nothing partial is left.
  void stop();

  // Queues a stored pending run. False when the queue is full (nothing queued).
  bool enqueue(const std::string& id);
  bool queue_full() const;

  // Cancels a pending or executing run (spec 3.9); no-op for a finished one.
  void cancel(const std::string& id);

  // Removes a finished run's outputs and marks it deleted (spec 3.10).
  void delete_outputs(const std::string& id);

  // The directory of a run's published outputs.
  std::string run_dir(const std::string& id) const;

 private:
  void worker();
  void execute(const std::string& id, const std::shared_ptr<std::atomic<int>>& stop_flag);

  const ServerConfig& config_;
  RunStore& store_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::string> queue_;
  std::map<std::string, std::shared_ptr<std::atomic<int>>> executing_;  // id -> 0 / kCancel / kShutdown
  bool stopping_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace nimbus::server
