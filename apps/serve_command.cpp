#include "serve_command.h"

#include <cstdlib>
#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "nimbus/core/error.h"
#include "nimbus/server/service.h"
#include "nimbus/workflow/workflow_spec.h"
#include "shipped_workflows.h"

void add_serve_command(CLI::App& app, ServeCommand& s) {
  auto& c = s.config;
  CLI::App* cmd = app.add_subcommand("serve", "Serve FarmVibes' REST API (/v0) for Nimbus' workflows, and a run page at /");
  cmd->fallthrough();
  cmd->add_option("--data-dir", c.data_dir, "Directory for the run database, run outputs and the op cache")->required();
  cmd->add_option("--input-root", c.input_roots,
                  "Directory local asset paths and model files may be under (repeatable; none: local paths refused)");
  cmd->add_option("--host", c.host, "Address to listen on (default loopback only)")->capture_default_str();
  cmd->add_option("--port", c.port, "Port (0: any free port, printed at start)")->capture_default_str();
  cmd->add_option("--token-file", s.token_file,
                  "File holding a bearer token every request must send (or set $NIMBUS_SERVER_TOKEN)");
  cmd->add_option("--param", s.params,
                  "Default workflow parameter NAME=VALUE for requests that leave it out (repeatable; VALUE parsed as "
                  "YAML), e.g. cloud_model=embedded:nimbus_cloud_v2");
  cmd->add_option("--concurrent-runs", c.concurrent_runs, "Runs executed at the same time")->capture_default_str();
  cmd->add_option("--parallel-tasks", c.parallel_tasks, "Tasks of one run at the same time")->capture_default_str();
  cmd->add_option("--max-queued", c.max_pending_runs, "Runs waiting to execute before submissions are refused (503)")
      ->capture_default_str();
  cmd->add_option("--max-body-bytes", c.max_body_bytes, "Largest request body accepted (413 beyond)")->capture_default_str();
  cmd->add_option("--http-threads", c.http_threads, "Connections served at the same time")->capture_default_str();
  cmd->add_option("--workflows-dir", c.workflows_dir, "Workflows served (default: the ones shipped with Nimbus)");
  cmd->add_option("--cache-dir", c.cache_dir, "Op cache shared by the runs (default DATA_DIR/cache)");
  cmd->add_flag("--no-remote-assets", s.no_remote_assets, "Refuse http(s) asset hrefs (local files only)");
}

int run_serve_command(ServeCommand& s) {
  auto& c = s.config;
  if (c.workflows_dir.empty()) {
    const char* env = std::getenv("NIMBUS_WORKFLOWS_DIR");
    c.workflows_dir = env ? env : shipped_workflows_dir();
  }
  c.allow_remote_assets = !s.no_remote_assets;
  if (!s.token_file.empty()) {
    std::ifstream in(s.token_file);
    if (!in) throw nimbus::InputError(fmt::format("--token-file '{}': cannot read it", s.token_file));
    std::stringstream ss;
    ss << in.rdbuf();
    c.token = ss.str();
    while (!c.token.empty() && (c.token.back() == '\n' || c.token.back() == '\r' || c.token.back() == ' '))
      c.token.pop_back();
    if (c.token.empty()) throw nimbus::InputError(fmt::format("--token-file '{}' is empty", s.token_file));
  } else if (const char* env = std::getenv("NIMBUS_SERVER_TOKEN"); env && *env) {
    c.token = env;
  }
  for (const std::string& p : s.params) {
    const auto eq = p.find('=');
    if (eq == std::string::npos || eq == 0) throw nimbus::InputError(fmt::format("--param '{}' must be NAME=VALUE", p));
    c.default_parameters[p.substr(0, eq)] = nimbus::yaml_scalar_to_json(p.substr(eq + 1));
  }
  if (c.host != "127.0.0.1" && c.host != "localhost" && c.host != "::1" && c.token.empty()) {
    spdlog::warn("listening on {} without a bearer token: anyone who can reach this address can submit runs", c.host);
  }
  nimbus::server::serve(c);
  return 0;
}
