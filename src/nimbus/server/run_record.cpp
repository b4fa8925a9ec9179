#include "nimbus/server/run_record.h"

namespace nimbus::server {

bool is_finished(const std::string& s) { return s == status::kDone || s == status::kFailed || s == status::kCancelled; }

OJson run_details(const std::string& s) {
  OJson d = OJson::object();
  d["start_time"] = nullptr;
  d["submission_time"] = nullptr;
  d["end_time"] = nullptr;
  d["reason"] = nullptr;
  d["status"] = s;
  d["subtasks"] = nullptr;
  return d;
}

OJson RunRecord::client_view() const {
  OJson o = OJson::object();
  o["name"] = name;
  o["workflow"] = workflow;
  o["parameters"] = parameters;
  o["user_input"] = user_input;
  o["id"] = id;
  o["details"] = details;
  o["task_details"] = task_details;
  o["spatio_temporal_json"] = spatio_temporal_json;
  o["output"] = output;
  return o;
}

OJson RunRecord::to_storage() const {
  OJson o = client_view();
  o["seq"] = seq;
  o["plan"] = plan;
  return o;
}

RunRecord RunRecord::from_storage(const OJson& s) {
  RunRecord r;
  r.id = s.at("id").get<std::string>();
  r.seq = s.at("seq").get<std::int64_t>();
  r.name = s.at("name");
  r.workflow = s.at("workflow");
  r.parameters = s.at("parameters");
  r.user_input = s.at("user_input");
  r.spatio_temporal_json = s.at("spatio_temporal_json");
  r.details = s.at("details");
  r.task_details = s.at("task_details");
  r.output = s.at("output");
  r.plan = s.at("plan");
  return r;
}

}  // namespace nimbus::server
