// `nimbus serve`: the FarmVibes-compatible REST service as a whole. Checks the
// configuration, opens the run store (recovering from a previous crash), starts the
// executor and the HTTP server, and runs until SIGINT, SIGTERM or SIGHUP.
#pragma once

#include "nimbus/server/server_config.h"

namespace nimbus::server {

// Throws InputError for a bad configuration (data directory, input roots, port in
// use). Returns when a signal asked it to stop: executing runs go back to pending.
void serve(ServerConfig config);

}  // namespace nimbus::server
