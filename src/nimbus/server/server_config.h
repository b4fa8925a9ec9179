// Settings of `nimbus serve`, the FarmVibes-compatible REST service.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace nimbus::server {

struct ServerConfig {
  std::string host = "127.0.0.1";  // loopback only unless told otherwise
  int port = 31108;                // FarmVibes' local cluster port
  std::string data_dir;            // runs.sqlite, runs/<id>/ (outputs), cache/ (op cache)
  std::string cache_dir;           // empty: <data_dir>/cache
  std::string workflows_dir;       // the workflows served
  // Local asset paths (and model files) must lie under one of these, after symbolic
  // links are resolved. None: local paths are refused.
  std::vector<std::string> input_roots;
  bool allow_remote_assets = true;  // http(s) asset hrefs, downloaded into the run's directory
  std::string token;                // non-empty: every request needs "Authorization: Bearer <token>"
  std::size_t max_body_bytes = 4u << 20;
  int max_pending_runs = 100;  // runs waiting for a worker; beyond that a submission is refused (503)
  int concurrent_runs = 1;
  int parallel_tasks = 2;  // tasks of one run at the same time
  int http_threads = 256;  // one per open keep-alive connection (200 polling clients)
  // Workflow parameter values applied when a request does not give them (e.g. models).
  nlohmann::json default_parameters = nlohmann::json::object();
};

}  // namespace nimbus::server
