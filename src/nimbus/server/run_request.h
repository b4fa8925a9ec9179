// Checks a run submission (POST /v0/runs body) completely before anything is queued:
// the body's shape, the workflow name, the parameters (through the workflow graph
// the run will use) and every input item and asset href.
#pragma once

#include <stdexcept>
#include <string>

#include "nimbus/server/run_record.h"
#include "nimbus/server/server_config.h"

namespace nimbus::server {

// A refused request: the HTTP status (400, 404, 422) and the message for the client.
class RequestError : public std::runtime_error {
 public:
  RequestError(int status, const std::string& message) : std::runtime_error(message), status_(status) {}
  int status() const { return status_; }

 private:
  int status_;
};

// Workflow names the server offers (those under workflows_dir, without "private" ones).
std::vector<std::string> served_workflows(const ServerConfig& config);

// A new run (id, name, workflow, parameters, user_input, plan; status pending) from a
// submission body. Throws RequestError naming the offending field.
RunRecord validate_submission(const OJson& body, const ServerConfig& config);

}  // namespace nimbus::server
