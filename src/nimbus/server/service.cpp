#include "nimbus/server/service.h"

#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <thread>

#include <fmt/format.h>
#include <httplib.h>

#include "nimbus/core/error.h"
#include "nimbus/core/log.h"
#include "nimbus/server/api.h"
#include "nimbus/server/run_executor.h"
#include "nimbus/server/run_store.h"

namespace nimbus::server {
namespace fs = std::filesystem;
namespace {

void check_config(ServerConfig& config) {
  if (config.data_dir.empty()) throw InputError("--data-dir is required: the directory for the run database and outputs");
  std::error_code ec;
  fs::create_directories(config.data_dir, ec);
  if (ec || !fs::is_directory(config.data_dir)) {
    throw InputError(fmt::format("--data-dir '{}': cannot create the directory ({}); give a writable directory",
                                 config.data_dir, ec ? ec.message() : "not a directory"));
  }
  config.data_dir = fs::canonical(config.data_dir).string();
  for (std::string& root : config.input_roots) {
    if (!fs::is_directory(root)) {
      throw InputError(fmt::format("--input-root '{}' is not a directory; give the folder client inputs are under", root));
    }
    root = fs::canonical(root).string();
    if (root == "/") throw InputError("--input-root /: the whole file system is not an input root; give a data folder");
  }
  if (!fs::is_directory(config.workflows_dir)) {
    throw InputError(fmt::format("--workflows-dir '{}' is not a directory", config.workflows_dir));
  }
  if (config.concurrent_runs < 1 || config.concurrent_runs > 64) throw InputError("--concurrent-runs must be in [1, 64]");
  if (config.max_pending_runs < 1) throw InputError("--max-queued must be at least 1");
  if (config.http_threads < 2 || config.http_threads > 1024) throw InputError("--http-threads must be in [2, 1024]");
  if (config.parallel_tasks < 1) throw InputError("--parallel-tasks must be at least 1");
}

}  // namespace

void serve(ServerConfig config) {
  check_config(config);
  // Signals are taken by one thread (sigwait); every other thread, started below,
  // inherits the blocked mask, so a signal never interrupts a run mid-write.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGHUP);
  sigset_t previous;
  pthread_sigmask(SIG_BLOCK, &signals, &previous);

  RunStore store((fs::path(config.data_dir) / "runs.sqlite").string());
  RunExecutor executor(config, store);
  for (const std::string& id : executor.recover()) {
    logger()->warn("run {} was executing when the server stopped: marked failed", id);
  }

  httplib::Server http;
  const int threads = config.http_threads;
  http.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<std::size_t>(threads)); };
  http.set_keep_alive_max_count(1000);
  http.set_keep_alive_timeout(5);
  http.set_read_timeout(30);
  http.set_write_timeout(30);
  install_routes(http, config, store, executor);
  int port = config.port;
  if (port == 0) {
    port = http.bind_to_any_port(config.host);
  } else if (!http.bind_to_port(config.host, port)) {
    port = -1;
  }
  if (port <= 0) {
    pthread_sigmask(SIG_SETMASK, &previous, nullptr);
    throw InputError(fmt::format("cannot listen on {}:{} (address in use, or not an address of this host); pick "
                                 "another --port or --host",
                                 config.host, config.port));
  }
  executor.start();

  std::atomic<bool> finished{false};
  std::thread signal_thread([&] {
    const timespec tick{0, 200 * 1000 * 1000};
    while (!finished.load()) {
      const int sig = sigtimedwait(&signals, nullptr, &tick);
      if (sig > 0) {
        logger()->info("signal {}: stopping (executing runs go back to pending)", sig);
        http.stop();
        return;
      }
    }
  });
  std::fprintf(stderr, "nimbus serve: listening on http://%s:%d/ (data %s, %d concurrent run%s%s)\n",
               config.host.c_str(), port, config.data_dir.c_str(), config.concurrent_runs,
               config.concurrent_runs == 1 ? "" : "s", config.token.empty() ? "" : ", bearer token required");
  std::fflush(stderr);
  http.listen_after_bind();
  finished = true;
  signal_thread.join();
  executor.stop();
  pthread_sigmask(SIG_SETMASK, &previous, nullptr);
}

}  // namespace nimbus::server
