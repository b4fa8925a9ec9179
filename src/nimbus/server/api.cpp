#include "nimbus/server/api.h"

#include <algorithm>
#include <filesystem>
#include <fstream>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <httplib.h>
#include <yaml-cpp/yaml.h>

#include "nimbus/core/log.h"
#include "nimbus/server/clock_and_ids.h"
#include "nimbus/server/page.h"
#include "nimbus/server/run_executor.h"
#include "nimbus/server/run_request.h"
#include "nimbus/server/run_store.h"
#include "nimbus/server/server_config.h"
#include "nimbus/server/system_metrics.h"
#include "nimbus/workflow/describe.h"
#include "nimbus/workflow/workflow_graph.h"

namespace nimbus::server {
namespace fs = std::filesystem;
namespace {

void send_json(httplib::Response& res, int status, const OJson& body) {
  res.status = status;
  res.set_content(body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace), "application/json");
}

// FarmVibes' message body: {"message": ..., "id": ..., "location": ...}.
OJson message(const std::string& text, const OJson& id = nullptr, const OJson& location = nullptr) {
  OJson m = OJson::object();
  m["message"] = text;
  m["id"] = id;
  m["location"] = location;
  return m;
}

void send_message(httplib::Response& res, int status, const std::string& text) {
  send_json(res, status, message(text));
}

// FastAPI's validation error shape (422), with a message the client can show.
void send_validation_error(httplib::Response& res, const std::string& where, const std::string& text) {
  OJson body = message(text);
  OJson detail = OJson::object();
  detail["loc"] = OJson::array({where});
  detail["msg"] = text;
  detail["type"] = "value_error";
  body["detail"] = OJson::array({detail});
  send_json(res, 422, body);
}

OJson yaml_to_json(const YAML::Node& n, int depth) {
  if (depth > 64) return nullptr;
  switch (n.Type()) {
    case YAML::NodeType::Scalar:
      if (n.Tag() == "!") return n.Scalar();
      return OJson::parse(yaml_scalar_to_json(n.Scalar()).dump());
    case YAML::NodeType::Sequence: {
      OJson a = OJson::array();
      for (const auto& item : n) a.push_back(yaml_to_json(item, depth + 1));
      return a;
    }
    case YAML::NodeType::Map: {
      OJson o = OJson::object();
      for (const auto& kv : n) o[kv.first.as<std::string>()] = yaml_to_json(kv.second, depth + 1);
      return o;
    }
    default:
      return nullptr;
  }
}

// A run id from the path: 422 unless a UUID, 404 unless known. Empty when answered.
std::string run_id_or_answer(const std::string& text, const RunStore& store, httplib::Response& res,
                             const char* not_found_format) {
  std::string id;
  if (!parse_uuid(text, id)) {
    send_validation_error(res, "run_id", fmt::format("run id '{}' is not a valid UUID", text));
    return "";
  }
  if (!store.read(id, [](const RunRecord&) {})) {
    send_message(res, 404, fmt::format(fmt::runtime(not_found_format), id));
    return "";
  }
  return id;
}

// One summary object of GET /v0/runs (spec 3.7). Returns false for a dotted field
// through null or a missing key.
bool summarise(const RunRecord& run, const std::vector<std::string>& fields, OJson& out, std::string& missing) {
  const OJson view = run.client_view();
  out = OJson::object();
  for (const auto& [key, value] : view.items()) {
    if (std::find(fields.begin(), fields.end(), key) != fields.end()) out[key] = value;
  }
  for (const std::string& f : fields) {
    if (f.find('.') == std::string::npos) continue;
    const OJson* at = &view;
    std::size_t start = 0;
    while (true) {
      const auto dot = f.find('.', start);
      const std::string part = f.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
      if (!at->is_object() || !at->contains(part)) {
        missing = f;
        return false;
      }
      at = &(*at)[part];
      if (dot == std::string::npos) break;
      start = dot + 1;
    }
    out[f] = *at;
  }
  return true;
}

bool parse_int_param(const httplib::Request& req, const char* name, long long& value, httplib::Response& res) {
  if (!req.has_param(name)) return true;
  const std::string text = req.get_param_value(name);
  try {
    std::size_t used = 0;
    value = std::stoll(text, &used);
    if (used == text.size()) return true;
  } catch (const std::exception&) {
  }
  send_validation_error(res, name, fmt::format("{}: '{}' is not an integer", name, text));
  return false;
}

std::vector<std::string> quicklook_urls(const RunRecord& run, const RunExecutor& executor) {
  std::vector<std::string> urls;
  if (run.status() != status::kDone) return urls;
  std::error_code ec;
  for (auto it = fs::directory_iterator(executor.run_dir(run.id), ec); !ec && it != fs::directory_iterator(); ++it) {
    const std::string name = it->path().filename().string();
    if (name.rfind("quicklook-", 0) == 0 && it->path().extension() == ".png") {
      urls.push_back(fmt::format("/runs/{}/{}", run.id, name));
    }
  }
  std::sort(urls.begin(), urls.end());
  return urls;
}

// Creates, stores and queues a run from a submission body (E6, E11).
void submit(const OJson& body, const ServerConfig& config, RunStore& store, RunExecutor& executor,
            httplib::Response& res) {
  RunRecord run;
  try {
    run = validate_submission(body, config);
  } catch (const RequestError& e) {
    if (e.status() == 422) {
      send_validation_error(res, "body", e.what());
    } else {
      send_message(res, e.status(), e.what());
    }
    return;
  }
  if (executor.queue_full()) {
    send_message(res, 503,
                 fmt::format("Unable to run workflow with provided parameters. The server's queue is full ({} runs "
                             "waiting); retry when runs have finished",
                             config.max_pending_runs));
    return;
  }
  const std::string id = run.id;
  store.insert(std::move(run));
  if (!executor.enqueue(id)) {  // filled up meanwhile: the run is refused, not left pending
    store.modify(id, [](RunRecord& r) {
      r.details["status"] = status::kFailed;
      r.details["reason"] = "the server's queue was full";
      r.details["end_time"] = utc_timestamp_now();
    });
    send_message(res, 503, "Unable to run workflow with provided parameters. The server's queue is full; retry later");
    return;
  }
  send_json(res, 201, message("Workflow created and queued for execution", id, "/runs/" + id));
}

}  // namespace

void install_routes(httplib::Server& http, const ServerConfig& config, RunStore& store, RunExecutor& executor) {
  http.set_payload_max_length(config.max_body_bytes);

  http.set_pre_routing_handler([&config](const httplib::Request& req, httplib::Response& res) {
    if (config.token.empty()) return httplib::Server::HandlerResponse::Unhandled;
    const std::string given = req.get_header_value("Authorization");
    const std::string expected = "Bearer " + config.token;
    // Constant time in the token's length: no byte-by-byte timing oracle.
    unsigned char diff = given.size() == expected.size() ? 0 : 1;
    for (std::size_t i = 0; i < expected.size(); ++i) {
      diff |= static_cast<unsigned char>(expected[i] ^ (i < given.size() ? given[i] : 0));
    }
    if (diff == 0) return httplib::Server::HandlerResponse::Unhandled;
    res.set_header("WWW-Authenticate", "Bearer");
    send_message(res, 401, "missing or wrong bearer token; send the header 'Authorization: Bearer <token>'");
    return httplib::Server::HandlerResponse::Handled;
  });
  http.set_post_routing_handler([](const httplib::Request&, httplib::Response& res) {
    res.set_header("Date", http_date_now());
    res.set_header("X-Content-Type-Options", "nosniff");
  });
  http.set_error_handler(httplib::Server::HandlerWithResponse([&config](const httplib::Request& req,
                                                                      httplib::Response& res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    if (res.status == 413) {
      send_message(res, 413, fmt::format("request body larger than {} bytes (--max-body-bytes)", config.max_body_bytes));
    } else if (res.status == 404) {
      send_message(res, 404, fmt::format("Not Found: {} {}", req.method, req.path));
    } else {
      send_message(res, res.status, fmt::format("HTTP {} for {} {}", res.status, req.method, req.path));
    }
    return httplib::Server::HandlerResponse::Handled;
  }));
  http.set_exception_handler([](const httplib::Request& req, httplib::Response& res, std::exception_ptr ep) {
    std::string what = "unknown error";
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    logger()->error("{} {}: {}", req.method, req.path, what);
    send_message(res, 500, "Internal server error: " + what);
  });

  // E0 and the page for people.
  http.Get("/", [&store, &executor](const httplib::Request&, httplib::Response& res) {
    const std::vector<RunRecord> runs = store.all();
    std::vector<std::vector<std::string>> quicklooks;
    for (const RunRecord& r : runs) quicklooks.push_back(quicklook_urls(r, executor));
    res.set_header("Content-Security-Policy", "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'");
    res.set_content(runs_page(runs, quicklooks), "text/html; charset=utf-8");
  });
  http.Get(R"(/runs/([0-9a-f-]{36})/(quicklook-[A-Za-z0-9_]+-[0-9]+\.png))",
           [&store, &executor](const httplib::Request& req, httplib::Response& res) {
             std::string id;
             if (!parse_uuid(req.matches[1], id) || !store.read(id, [](const RunRecord&) {})) {
               send_message(res, 404, "no such run");
               return;
             }
             const fs::path file = fs::path(executor.run_dir(id)) / std::string(req.matches[2]);
             std::ifstream in(file, std::ios::binary);
             if (!in) {
               send_message(res, 404, "no quicklook for this run");
               return;
             }
             std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
             res.set_content(bytes, "image/png");
           });

  // E1
  const auto health = [](const httplib::Request&, httplib::Response& res) {
    send_json(res, 200, message("REST API server is running"));
  };
  http.Get("/v0/", health);
  http.Get("/v0", health);

  // E2
  http.Get("/v0/system-metrics", [&config](const httplib::Request&, httplib::Response& res) {
    send_json(res, 200, system_metrics(config.data_dir));
  });

  // E3, E4, E5
  http.Get(R"(/v0/workflows/?)", [&config](const httplib::Request&, httplib::Response& res) {
    send_json(res, 200, OJson(served_workflows(config)));
  });
  http.Get(R"(/v0/workflows/(.+))", [&config](const httplib::Request& req, httplib::Response& res) {
    const std::string name = req.matches[1];
    const std::string format = req.has_param("return_format") ? req.get_param_value("return_format") : "description";
    const auto served = served_workflows(config);
    if (std::find(served.begin(), served.end(), name) == served.end()) {
      send_message(res, 404, fmt::format("Workflow \"{}\" not found", name));
      return;
    }
    if (format != "description" && format != "yaml") {
      send_message(res, 400, fmt::format("Invalid return format: {}", format));
      return;
    }
    const WorkflowLibrary library{config.workflows_dir};
    try {
      Json described = describe_workflow_json(name, library);
      if (format == "yaml") {
        send_json(res, 200, yaml_to_json(YAML::LoadFile(library.resolve(name)), 0));
        return;
      }
      // The server's default parameters are the effective defaults a client sees.
      for (auto& [key, value] : described["parameters"].items()) {
        if (config.default_parameters.contains(key)) value = config.default_parameters[key];
      }
      send_json(res, 200, OJson::parse(described.dump()));
    } catch (const std::exception& e) {
      send_message(res, 500, std::string("Internal server error: ") + e.what());
    }
  });

  // E6
  http.Post("/v0/runs", [&](const httplib::Request& req, httplib::Response& res) {
    OJson body;
    try {
      body = OJson::parse(req.body);
    } catch (const nlohmann::json::parse_error& e) {
      send_validation_error(res, "body", fmt::format("body: not valid JSON ({})", e.what()));
      return;
    }
    submit(body, config, store, executor, res);
  });

  // E7
  http.Get("/v0/runs", [&store](const httplib::Request& req, httplib::Response& res) {
    std::vector<std::string> ids, fields;
    for (std::size_t i = 0; i < req.get_param_value_count("ids"); ++i) {
      const std::string text = req.get_param_value("ids", i);
      std::string id;
      if (!parse_uuid(text, id)) {
        send_validation_error(res, "ids", fmt::format("ids: '{}' is not a valid UUID", text));
        return;
      }
      ids.push_back(id);
    }
    for (std::size_t i = 0; i < req.get_param_value_count("fields"); ++i) fields.push_back(req.get_param_value("fields", i));
    long long page = 0, items = 0;
    if (!parse_int_param(req, "page", page, res) || !parse_int_param(req, "items", items, res)) return;
    if (ids.empty() && fields.empty()) {
      send_json(res, 200, OJson(store.ids()));
      return;
    }
    if (fields.empty()) fields = {"id", "name", "workflow", "details.status"};
    if (ids.empty()) ids = store.ids();
    std::vector<std::string> unknown;
    OJson out = OJson::array();
    std::string missing;
    bool bad_field = false;
    for (const std::string& id : ids) {
      const bool found = store.read(id, [&](const RunRecord& run) {
        OJson summary;
        if (!summarise(run, fields, summary, missing)) bad_field = true;
        out.push_back(std::move(summary));
      });
      if (!found) unknown.push_back(id);
    }
    if (!unknown.empty()) {
      send_message(res, 404, fmt::format("Failed to get id(s) [{}]", fmt::join(unknown, ", ")));
      return;
    }
    if (bad_field) {
      send_message(res, 404, fmt::format("Failed to get field '{}': missing or null in a requested run", missing));
      return;
    }
    if (items > 0) {
      const long long first = std::max(0LL, page) * items;
      OJson paged = OJson::array();
      for (long long i = first; i < first + items && i < static_cast<long long>(out.size()); ++i) paged.push_back(out[i]);
      out = std::move(paged);
    }
    send_json(res, 200, out);
  });

  // E8
  http.Get(R"(/v0/runs/([^/]+))", [&store](const httplib::Request& req, httplib::Response& res) {
    const std::string id = run_id_or_answer(req.matches[1], store, res, "Workflow execution \"{}\" not found");
    if (id.empty()) return;
    OJson view;
    store.read(id, [&](const RunRecord& run) { view = run.client_view(); });
    send_json(res, 200, view);
  });

  // E9
  http.Post(R"(/v0/runs/([^/]+)/cancel)", [&store, &executor](const httplib::Request& req, httplib::Response& res) {
    const std::string id = run_id_or_answer(req.matches[1], store, res, "Workflow execution {} not found");
    if (id.empty()) return;
    executor.cancel(id);
    send_message(res, 202, fmt::format("Requested cancellation of workflow run {}", id));
  });

  // E10
  http.Delete(R"(/v0/runs/([^/]+))", [&store, &executor](const httplib::Request& req, httplib::Response& res) {
    const std::string id = run_id_or_answer(req.matches[1], store, res, "Workflow execution {} not found");
    if (id.empty()) return;
    std::string st;
    store.read(id, [&](const RunRecord& run) { st = run.status(); });
    if (!is_finished(st)) {
      send_message(res, 400, "Cannot delete an unfinished workflow run.");
      return;
    }
    executor.delete_outputs(id);
    send_message(res, 200, fmt::format("Requested deletion of workflow run {}", id));
  });

  // E11
  http.Post(R"(/v0/runs/([^/]+)/resubmit)", [&](const httplib::Request& req, httplib::Response& res) {
    const std::string id = run_id_or_answer(req.matches[1], store, res, "Workflow run {} not found");
    if (id.empty()) return;
    OJson body = OJson::object();
    store.read(id, [&](const RunRecord& run) {
      body["name"] = run.name;
      body["workflow"] = run.workflow;
      body["parameters"] = run.parameters;
      body["user_input"] = run.user_input;
    });
    submit(body, config, store, executor, res);
  });
}

}  // namespace nimbus::server
