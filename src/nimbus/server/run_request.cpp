#include "nimbus/server/run_request.h"

#include <algorithm>
#include <filesystem>
#include <map>
#include <set>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "nimbus/parameters.h"
#include "nimbus/server/clock_and_ids.h"
#include "nimbus/server/input_paths.h"
#include "nimbus/workflow/describe.h"
#include "nimbus/workflow/workflow_graph.h"

namespace nimbus::server {
namespace fs = std::filesystem;
namespace {

constexpr const char* kPrefix = "Unable to run workflow with provided parameters. ";
constexpr std::size_t kMaxItemsPerSource = 100;

[[noreturn]] void bad(const std::string& message) { throw RequestError(400, kPrefix + message); }
[[noreturn]] void bad_shape(const std::string& message) { throw RequestError(422, message); }

const char* json_type(const OJson& v) {
  if (v.is_null()) return "null";
  if (v.is_boolean()) return "a boolean";
  if (v.is_number()) return "a number";
  if (v.is_string()) return "a string";
  if (v.is_array()) return "an array";
  return "an object";
}

// Properties a data type's constructor takes from a STAC item (spec 4.6).
const std::vector<std::string>& required_properties(const std::string& type) {
  static const std::vector<std::string> none;
  static const std::vector<std::string> product{"product_name", "orbit_number",  "relative_orbit_number",
                                                "orbit_direction", "platform",  "extra_info",
                                                "tile_id",        "processing_level"};
  static const std::vector<std::string> raster = [] {
    auto v = product;
    v.push_back("bands");
    return v;
  }();
  static const std::vector<std::string> mask = [] {
    auto v = raster;
    v.push_back("categories");
    return v;
  }();
  if (type == "Sentinel2Raster") return raster;
  if (type == "Sentinel2CloudMask") return mask;
  if (type == "Sentinel2CloudProbability") return product;
  return none;
}

// The type a source's ports need (the most specific when it feeds several).
std::string source_type(const WorkflowGraph& graph, const std::vector<PortRef>& targets) {
  std::string type = "DataVibe";
  for (const PortRef& t : targets) {
    const GraphNode* node = graph.node(t.node);
    for (const PortSpec& p : node->op->inputs) {
      if (p.name == t.port && data_type_is_a(p.type, type)) type = p.type;
    }
  }
  return type;
}

// One STAC item of a source: its shape, type and raster asset. Returns the plan entry.
OJson check_item(const OJson& item, const std::string& expected_type, const ServerConfig& config,
                 const std::string& field) {
  if (!item.is_object()) bad(fmt::format("{}: expected a STAC item (a JSON object), got {}", field, json_type(item)));
  static const std::set<std::string> known{"type",   "stac_version", "id",     "properties",      "geometry",
                                           "bbox",   "links",        "assets", "stac_extensions", "collection",
                                           "terravibes_data_type"};
  for (const auto& [key, value] : item.items()) {
    if (!known.count(key)) bad(fmt::format("{}.{}: unknown field of a STAC item", field, key));
  }
  for (const char* key : {"type", "stac_version", "id", "terravibes_data_type"}) {
    if (!item.contains(key)) bad(fmt::format("{}.{}: missing", field, key));
    if (!item[key].is_string()) bad(fmt::format("{}.{}: expected a string, got {}", field, key, json_type(item[key])));
  }
  if (item["type"] != "Feature") bad(fmt::format("{}.type: expected \"Feature\" (a STAC item)", field));
  for (const char* key : {"properties", "assets"}) {
    if (!item.contains(key)) bad(fmt::format("{}.{}: missing", field, key));
    if (!item[key].is_object()) bad(fmt::format("{}.{}: expected an object, got {}", field, key, json_type(item[key])));
  }
  if (!item.contains("geometry") || !item["geometry"].is_object() || !item["geometry"].contains("type")) {
    bad(fmt::format("{}.geometry: expected a GeoJSON geometry object", field));
  }
  if (item.contains("links") && !item["links"].is_array()) bad(fmt::format("{}.links: expected an array", field));
  const std::string type = item["terravibes_data_type"].get<std::string>();
  if (!data_type_is_a(type, expected_type)) {
    bad(fmt::format("{}.terravibes_data_type: '{}' is not a {} (workflow source expects inputs of type {})", field,
                    type, expected_type, expected_type));
  }
  const OJson& props = item["properties"];
  for (const std::string& p : required_properties(expected_type)) {
    if (!props.contains(p)) bad(fmt::format("{}.properties.{}: missing (required for {})", field, p, expected_type));
  }
  // FarmVibes' raster asset: the first asset whose type contains "image/".
  const OJson* asset = nullptr;
  std::string asset_id;
  for (const auto& [key, value] : item["assets"].items()) {
    if (!value.is_object()) bad(fmt::format("{}.assets.{}: expected an object with href and type", field, key));
    if (!value.contains("href") || !value["href"].is_string()) {
      bad(fmt::format("{}.assets.{}.href: missing or not a string", field, key));
    }
    if (!asset && value.contains("type") && value["type"].is_string() &&
        value["type"].get<std::string>().find("image/") != std::string::npos) {
      asset = &value;
      asset_id = key;
    }
  }
  if (!asset) bad(fmt::format("{}.assets: no asset whose type is an image (e.g. \"image/tiff\")", field));
  const std::string href_field = fmt::format("{}.assets.{}.href", field, asset_id);
  ResolvedHref resolved;
  try {
    resolved = resolve_asset_href((*asset)["href"].get<std::string>(), config.input_roots, config.allow_remote_assets,
                                  href_field);
  } catch (const InputError& e) {
    bad(e.what());
  }
  OJson entry = OJson::object();
  entry["href"] = resolved.location;
  entry["remote"] = resolved.remote;
  entry["item"] = item;
  return entry;
}

// Model files named by parameters must be embedded models or lie under an input root.
void check_model_paths(const WorkflowGraph& graph, const ServerConfig& config) {
  for (const GraphNode& node : graph.nodes) {
    if (!node.parameters.contains("model_path") || !node.parameters["model_path"].is_string()) continue;
    const std::string model = node.parameters["model_path"].get<std::string>();
    if (model.rfind("embedded:", 0) == 0) continue;
    std::string root = node.parameters.value("root_dir", std::string());
    const fs::path path = root.empty() || fs::path(model).is_absolute() ? fs::path(model) : fs::path(root) / model;
    try {
      require_under_input_root(path.string(), config.input_roots,
                               fmt::format("parameters: model of task '{}'", node.name));
    } catch (const InputError& e) {
      bad(fmt::format("{}; use embedded:nimbus_cloud_v2 / embedded:nimbus_shadow_v1 or a model under an input root",
                      e.what()));
    }
  }
}

}  // namespace

std::vector<std::string> served_workflows(const ServerConfig& config) {
  std::vector<std::string> names;
  for (const std::string& n : list_workflows(config.workflows_dir)) {
    if (n.find("private") == std::string::npos) names.push_back(n);
  }
  return names;
}

RunRecord validate_submission(const OJson& body, const ServerConfig& config) {
  if (!body.is_object()) bad_shape(fmt::format("body: expected a JSON object, got {}", json_type(body)));
  static const std::set<std::string> fields{"name", "workflow", "parameters", "user_input"};
  for (const auto& [key, value] : body.items()) {
    if (!fields.count(key)) bad_shape(fmt::format("{}: unknown field; a run has name, workflow, parameters, user_input", key));
  }
  for (const char* key : {"name", "workflow", "user_input"}) {
    if (!body.contains(key)) bad_shape(fmt::format("{}: field required", key));
  }
  if (!body["name"].is_string()) bad_shape(fmt::format("name: expected a string, got {}", json_type(body["name"])));
  const OJson& workflow = body["workflow"];
  if (!workflow.is_string()) {
    bad(fmt::format("workflow: expected a workflow name (a string), got {}; this server runs only the workflows "
                    "GET /v0/workflows lists",
                    json_type(workflow)));
  }
  const OJson parameters = body.contains("parameters") ? body["parameters"] : OJson();
  if (!parameters.is_null() && !parameters.is_object()) {
    bad_shape(fmt::format("parameters: expected an object or null, got {}", json_type(parameters)));
  }
  const std::string name = workflow.get<std::string>();
  const auto served = served_workflows(config);
  if (std::find(served.begin(), served.end(), name) == served.end()) {
    if (!name.empty() && (name.front() == '{')) {
      bad("workflow: inline workflow definitions are not accepted; give a name from GET /v0/workflows");
    }
    bad(fmt::format("Workflow \"{}\" unknown", name));
  }

  // Parameters: the server's defaults, then the request's; checked by building the graph.
  Json overrides = config.default_parameters.is_object() ? config.default_parameters : Json::object();
  const WorkflowLibrary library{config.workflows_dir};
  const std::string path = library.resolve(name);
  {
    const WorkflowSpec spec = parse_workflow_file(path);
    for (auto it = overrides.begin(); it != overrides.end();) {
      it = spec.has_parameter(it.key()) ? std::next(it) : overrides.erase(it);  // defaults for other workflows
    }
  }
  const Json server_defaults = overrides;
  if (parameters.is_object()) {
    for (const auto& [key, value] : parameters.items()) overrides[key] = Json::parse(value.dump());
  }
  WorkflowGraph graph;
  try {
    graph = build_workflow_graph(path, overrides, library);
  } catch (const InputError& e) {
    // Name the request's parameter: the library's message may name the op parameter it feeds.
    std::string field = "parameters";
    for (const auto& [key, value] : parameters.items()) {
      Json one = server_defaults;
      one[key] = Json::parse(value.dump());
      try {
        build_workflow_graph(path, one, library);
      } catch (const InputError&) {
        field = "parameters." + key;
        break;
      }
    }
    bad(field + ": " + spell_parameters(e.what(), [](const std::string& n) { return n; }));
  }
  check_model_paths(graph, config);

  // Inputs: an object keyed by source, or (one-source workflows) an item or a list of items.
  const OJson& user_input = body["user_input"];
  std::vector<std::string> sources;
  for (const auto& [source, targets] : graph.sources) sources.push_back(source);
  if (user_input.is_object() && user_input.contains("geojson") && user_input.contains("start_date") &&
      user_input.contains("end_date")) {
    bad(fmt::format("user_input: workflow \"{}\" cannot use a geometry and time range (geometry=, time_range=); its "
                    "sources {} need data items: pass input_data={{{}: ...}}",
                    name, fmt::join(sources, ", "), fmt::join(sources, ": ..., ")));
  }
  OJson by_source = OJson::object();
  std::set<std::string> keys;
  if (user_input.is_object()) {
    for (const auto& [k, v] : user_input.items()) keys.insert(k);
  }
  if (user_input.is_object() && keys == std::set<std::string>(sources.begin(), sources.end())) {
    by_source = user_input;
  } else if (sources.size() == 1 && (user_input.is_array() || (user_input.is_object() && user_input.contains("type")))) {
    by_source[sources.front()] = user_input;
  } else if (!user_input.is_object() && !user_input.is_array()) {
    bad_shape(fmt::format("user_input: expected an object, got {}", json_type(user_input)));
  } else {
    for (const std::string& k : keys) {
      if (std::find(sources.begin(), sources.end(), k) == sources.end()) {
        bad(fmt::format("user_input.{}: workflow \"{}\" has no source '{}'; its sources: {}", k, name, k,
                        fmt::join(sources, ", ")));
      }
    }
    bad(fmt::format("User input does not specify workflow sources and workflow has multiple sources: {}. A "
                    "dictionary with matching keys is required.",
                    fmt::join(sources, ", ")));
  }

  // Items per source; lists are paired by index, single items broadcast.
  std::map<std::string, std::vector<OJson>> entries;
  std::size_t pairs = 1;
  for (const auto& [source, targets] : graph.sources) {
    const std::string type = source_type(graph, targets);
    const OJson& value = by_source[source];
    const std::string field = "user_input." + source;
    if (value.is_array()) {
      if (value.empty()) bad(fmt::format("{}: empty list; give at least one item", field));
      if (value.size() > kMaxItemsPerSource) {
        bad(fmt::format("{}: {} items; at most {} per run", field, value.size(), kMaxItemsPerSource));
      }
      for (std::size_t i = 0; i < value.size(); ++i) {
        entries[source].push_back(check_item(value[i], type, config, fmt::format("{}[{}]", field, i)));
      }
    } else {
      entries[source].push_back(check_item(value, type, config, field));
    }
    const std::size_t n = entries[source].size();
    if (n != 1 && pairs != 1 && n != pairs) {
      bad(fmt::format("{}: {} items, but another source has {}; lists are paired by index (or give one item to use "
                      "with every element)",
                      field, n, pairs));
    }
    pairs = std::max(pairs, n);
  }
  OJson plan_pairs = OJson::array();
  for (std::size_t i = 0; i < pairs; ++i) {
    OJson pair = OJson::object();
    for (const std::string& source : sources) {
      const auto& list = entries[source];
      pair[source] = list.size() == 1 ? list.front() : list[i];
    }
    plan_pairs.push_back(pair);
  }

  RunRecord run;
  run.id = new_uuid4();
  run.name = body["name"];
  run.workflow = workflow;
  run.parameters = parameters;
  run.user_input = user_input;
  run.spatio_temporal_json = nullptr;
  run.details["submission_time"] = utc_timestamp_now();
  run.plan = OJson::object();
  run.plan["workflow"] = name;
  run.plan["parameters"] = OJson::parse(overrides.dump());
  run.plan["pairs"] = plan_pairs;
  return run;
}

}  // namespace nimbus::server
