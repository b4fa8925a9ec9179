// `nimbus serve`: command-line options of the REST service.
#pragma once

#include <CLI/CLI.hpp>

#include "nimbus/server/server_config.h"

struct ServeCommand {
  nimbus::server::ServerConfig config;
  std::string token_file;
  std::vector<std::string> params;
  bool no_remote_assets = false;
};

void add_serve_command(CLI::App& app, ServeCommand& s);
// Fills the configuration (workflows, token, parameters) and serves until a signal.
int run_serve_command(ServeCommand& s);
