// One run of the REST service: what the client submitted, its status, its tasks'
// details and its outputs, plus the resolved plan the executor follows.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

namespace nimbus::server {

using OJson = nlohmann::ordered_json;  // keys in the order written (the client shows them)

// FarmVibes' run statuses (spec 4.3).
namespace status {
inline constexpr const char* kPending = "pending";
inline constexpr const char* kQueued = "queued";
inline constexpr const char* kRunning = "running";
inline constexpr const char* kFailed = "failed";
inline constexpr const char* kDone = "done";
inline constexpr const char* kCancelled = "cancelled";
inline constexpr const char* kDeleting = "deleting";
inline constexpr const char* kDeleted = "deleted";
}  // namespace status

// done, failed or cancelled.
bool is_finished(const std::string& status);

// A RunDetails object with all six keys (spec 4.2).
OJson run_details(const std::string& status);

struct RunRecord {
  std::string id;
  std::int64_t seq = 0;  // creation order
  OJson name;
  OJson workflow;
  OJson parameters;
  OJson user_input;
  OJson spatio_temporal_json;  // always null: no Nimbus workflow takes a geometry
  OJson details = run_details(status::kPending);
  OJson task_details = OJson::object();
  OJson output = OJson::object();
  // Not shown to clients: {"workflow": name, "parameters": resolved overrides,
  // "pairs": [{source: {"href": local path or URL, "remote": bool, "item": STAC item}}]}.
  OJson plan;

  std::string status() const { return details.value("status", status::kPending); }

  // The nine keys of spec 4.1, as GET /v0/runs/<id> returns them.
  OJson client_view() const;
  // Everything, for the run store.
  OJson to_storage() const;
  static RunRecord from_storage(const OJson& stored);
};

}  // namespace nimbus::server
