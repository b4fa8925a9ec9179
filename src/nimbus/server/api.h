// The HTTP routes of `nimbus serve`: FarmVibes' REST API under /v0 (spec
// /work/shared/spec/farmvibes-rest-api.md, section 2), the page at / and the quicklooks.
#pragma once

namespace httplib {
class Server;
}

namespace nimbus::server {

struct ServerConfig;
class RunStore;
class RunExecutor;

// Registers every route and the handlers shared by all responses (bearer token,
// Date header, JSON errors, body size limit) on `http`.
void install_routes(httplib::Server& http, const ServerConfig& config, RunStore& store, RunExecutor& executor);

}  // namespace nimbus::server
