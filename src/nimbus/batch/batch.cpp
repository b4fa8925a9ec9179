#include "nimbus/batch/batch.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string_view>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "nimbus/core/checksum.h"
#include "nimbus/core/error.h"
#include "nimbus/core/input_files.h"
#include "nimbus/version.h"
#include "nimbus/models/default_models.h"
#include "nimbus/pipeline/improve_cloud_mask_parameters.h"
#include "nimbus/raster/atomic_output.h"
#include "nimbus/raster/geotiff_writer.h"
#include "nimbus/raster/stac_item.h"

namespace nimbus {
namespace fs = std::filesystem;
namespace {

// One CSV record per call (RFC 4180: quotes, doubled quotes, commas and newlines
// inside quotes). Returns false at end of input.
// One CSV record per call (RFC 4180: quotes, doubled quotes, commas and newlines
// inside quotes). A quote opens a quoted field only at the start of the field; inside
// an unquoted field it is an ordinary character (as Excel reads `my "best" scene.tif`).
// Text after a closing quote is an error. Returns false at end of input.
bool read_csv_record(std::istream& in, std::vector<std::string>& fields, int& line, const std::string& path) {
  fields.clear();
  std::string field;
  bool quoted = false, any = false, field_started = false, after_quote = false;
  const int start_line = line + 1;
  for (int c = in.get(); c != EOF; c = in.get()) {
    any = true;
    if (c == '\0') {  // a path would end there for the file system: never a silent other file
      throw InputError(fmt::format("manifest '{}' line {}: contains a NUL byte; save the manifest as plain UTF-8 "
                                   "text",
                                   path, line + 1));
    }
    if (quoted) {
      if (c == '"') {
        if (in.peek() == '"') {
          field += '"';
          in.get();
        } else {
          quoted = false;
          after_quote = true;
        }
      } else {
        if (c == '\n') ++line;
        field += static_cast<char>(c);
      }
    } else if (c == ',') {
      fields.push_back(field);
      field.clear();
      field_started = after_quote = false;
    } else if (c == '\n') {
      ++line;
      fields.push_back(field);
      return true;
    } else if (c == '\r') {
      continue;
    } else if (after_quote) {
      if (c == ' ' || c == '\t') continue;  // spaces before the comma
      throw InputError(fmt::format("manifest '{}' line {}: text after the closing quote of field {}; quote the "
                                   "whole field and double the quotes inside it (\"\")",
                                   path, line + 1, fields.size() + 1));
    } else if (c == '"' && !field_started) {
      quoted = true;
      field_started = true;
      field.clear();  // spaces before an opening quote are not part of the field
    } else {
      if (c != ' ' && c != '\t') field_started = true;
      field += static_cast<char>(c);
    }
  }
  if (quoted) throw InputError(fmt::format("manifest '{}' line {}: unterminated quoted field; close the quote",
                                           path, start_line));
  if (!any) return false;
  ++line;
  fields.push_back(field);
  return true;
}

constexpr std::size_t kMaxIdBytes = 255 - std::char_traits<char>::length(".tif.nimbus.json");

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t") - b + 1);
}

bool is_http_url(const std::string& s) { return s.rfind("http://", 0) == 0 || s.rfind("https://", 0) == 0; }

std::string file_identity(const std::string& path) {
  // A STAC item at a URL or inside a collection: its content says whether it changed
  // (the catalogue updates an item when its assets change).
  if (is_http_url(path) || (path.find('#') != std::string::npos && looks_like_stac_item(path))) {
    return fmt::format("{} sha256:{}", path,
                       sha256_hex(read_stac_item(path).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)));
  }
  const std::optional<std::string> identity = file_stat_identity(path);
  if (!identity) throw InputError(fmt::format("input '{}' does not exist; fix the manifest", path));
  return *identity;
}

// The id of a scene from a STAC item (a URL or a local item file): the item's "id" made
// a file name; empty when the item cannot be read (the scene fails with the reason later).
std::string stac_scene_id(const std::string& item) {
  try {
    const nlohmann::json doc = read_stac_item(item);
    const auto it = doc.is_object() ? doc.find("id") : doc.end();
    if (doc.is_object() && it != doc.end() && it->is_string()) return filename_safe_id(it->get<std::string>());
  } catch (const InputError&) {
  }
  return {};
}

struct SceneRecord {
  std::string sha256;
  std::string recipe;
};

bool read_record(const std::string& path, SceneRecord& record) {
  std::error_code ec;
  if (!fs::is_regular_file(fs::symlink_status(path, ec))) return false;  // a FIFO would block the read
  std::ifstream in(path);
  if (!in) return false;
  const nlohmann::json j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("sha256") || !j.contains("recipe") || !j["sha256"].is_string() ||
      !j["recipe"].is_string()) {
    return false;  // unreadable or foreign record: recompute
  }
  record.sha256 = j["sha256"].get<std::string>();
  record.recipe = j["recipe"].get<std::string>();
  return true;
}

}  // namespace

std::string filename_safe_id(const std::string& id) {
  std::string safe;
  for (const char c : id) {
    const bool plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                       std::string_view("-_.+=@,").find(c) != std::string_view::npos;
    safe += plain ? c : '_';
  }
  if (!safe.empty() && safe[0] == '.') safe[0] = '_';
  if (safe.size() > kMaxIdBytes) safe.resize(kMaxIdBytes);
  return safe;
}

std::string scene_id_from_path(const std::string& s2_raster) {
  // A URL's query string (e.g. a signature) is not part of the name.
  const bool url = s2_raster.rfind("http://", 0) == 0 || s2_raster.rfind("https://", 0) == 0;
  fs::path p(url ? s2_raster.substr(0, s2_raster.find('?')) : s2_raster);
  while (!p.empty() && p.filename().empty()) p = p.parent_path();  // trailing slash
  if (p.filename() == "MTD_MSIL2A.xml") p = p.parent_path();
  std::string name = p.filename().string();
  for (const char* suffix : {".zip", ".SAFE", ".tif", ".tiff", ".TIF", ".vrt", ".jp2", ".json"}) {
    const std::string s(suffix);
    if (name.size() > s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0) {
      name.resize(name.size() - s.size());
      if (s == ".zip" && name.size() > 5 && name.compare(name.size() - 5, 5, ".SAFE") == 0) name.resize(name.size() - 5);
      break;
    }
  }
  return name;
}

void check_scene_ids(const std::vector<BatchScene>& scenes) {
  std::map<std::string, std::size_t> seen;
  for (std::size_t i = 0; i < scenes.size(); ++i) {
    const std::string& id = scenes[i].id;
    const bool control = std::any_of(id.begin(), id.end(), [](char c) {
      return static_cast<unsigned char>(c) < 0x20 || c == 0x7f;
    });
    if (id.empty() || id == "." || id == ".." || id.find('/') != std::string::npos || id[0] == '.' || control) {
      throw InputError(fmt::format("scene {} ('{}'): id '{}' cannot name an output file; give an id without '/' "
                                   "or control characters that does not start with '.'",
                                   i + 1, scenes[i].s2_raster, id));
    }
    // <id>.tif.nimbus.json must fit the usual 255-byte file-name limit.
    if (id.size() > kMaxIdBytes) {
      throw InputError(fmt::format("scene {} ('{}'): id '{}…' is {} bytes; file names allow {} for the id: give a "
                                   "shorter id",
                                   i + 1, scenes[i].s2_raster, id.substr(0, 40), id.size(), kMaxIdBytes));
    }
    const auto [it, inserted] = seen.emplace(id, i);
    if (!inserted) {
      throw InputError(fmt::format("scenes {} and {} both have the id '{}' ('{}', '{}'); two scenes would write one "
                                   "output: give them distinct ids",
                                   it->second + 1, i + 1, id, scenes[it->second].s2_raster, scenes[i].s2_raster));
    }
  }
}

namespace {

// The scenes of an ItemCollection manifest: one per item, named by its id.
std::vector<BatchScene> read_collection_manifest(const std::string& manifest) {
  const std::string location =
      is_http_url(manifest) || manifest.rfind("/vsi", 0) == 0 ? manifest : fs::absolute(manifest).lexically_normal().string();
  std::vector<BatchScene> scenes;
  for (const StacCollectionScene& item : read_stac_item_collection(location)) {
    scenes.push_back({filename_safe_id(item.item_id), item.locator, ""});
  }
  try {
    check_scene_ids(scenes);
  } catch (const InputError& e) {
    throw InputError(fmt::format("manifest '{}': {}", manifest, e.what()));
  }
  return scenes;
}

}  // namespace

std::vector<BatchScene> read_batch_manifest(const std::string& manifest_path) {
  if (is_http_url(manifest_path) || looks_like_stac_item(manifest_path)) return read_collection_manifest(manifest_path);
  require_not_special_file(manifest_path, "manifest");
  std::ifstream in(manifest_path, std::ios::binary);
  if (!in) throw InputError(fmt::format("manifest '{}' cannot be read; check the path", manifest_path));
  // Excel's "CSV UTF-8" starts with a byte-order mark: skip it. UTF-16 ("Unicode
  // text") is refused before its NUL bytes turn into confusing field errors.
  char head[3] = {0, 0, 0};
  in.read(head, 3);
  const std::streamsize got = in.gcount();
  const auto byte = [&](int i) { return static_cast<unsigned char>(head[i]); };
  if (got >= 2 && ((byte(0) == 0xFF && byte(1) == 0xFE) || (byte(0) == 0xFE && byte(1) == 0xFF) ||
                   (got == 3 && (byte(0) == 0 || byte(1) == 0)))) {
    throw InputError(fmt::format("manifest '{}' is UTF-16 text; save it as UTF-8 (e.g. \"CSV UTF-8\" in Excel, or "
                                 "iconv -f UTF-16 -t UTF-8)",
                                 manifest_path));
  }
  in.clear();
  in.seekg(got == 3 && byte(0) == 0xEF && byte(1) == 0xBB && byte(2) == 0xBF ? 3 : 0);
  const fs::path base = fs::absolute(manifest_path).parent_path();
  const auto resolve = [&](const std::string& p) {
    if (p.empty() || fs::path(p).is_absolute() || p.rfind("/vsi", 0) == 0 || p.rfind("http://", 0) == 0 ||
        p.rfind("https://", 0) == 0) {
      return p;
    }
    return (base / p).lexically_normal().string();
  };
  int line = 0;
  std::vector<std::string> fields;
  std::map<std::string, std::size_t> column;
  std::vector<BatchScene> scenes;
  std::vector<int> scene_lines;
  while (read_csv_record(in, fields, line, manifest_path)) {
    if (fields.size() == 1 && trim(fields[0]).empty()) continue;
    if (!fields.empty() && !fields[0].empty() && trim(fields[0])[0] == '#') continue;
    if (column.empty()) {
      for (std::size_t i = 0; i < fields.size(); ++i) {
        const std::string name = trim(fields[i]);
        if (name != "s2_raster" && name != "product_mask" && name != "id") {
          throw InputError(fmt::format("manifest '{}' line {}: unknown column '{}'; the header names s2_raster "
                                       "(required), product_mask and id",
                                       manifest_path, line, name));
        }
        if (!column.emplace(name, i).second) {
          throw InputError(fmt::format("manifest '{}' line {}: column '{}' appears twice", manifest_path, line, name));
        }
      }
      if (!column.count("s2_raster")) {
        throw InputError(fmt::format("manifest '{}' line {}: the header has no s2_raster column; start the file "
                                     "with a header such as: s2_raster,product_mask,id",
                                     manifest_path, line));
      }
      continue;
    }
    if (fields.size() != column.size()) {
      throw InputError(fmt::format("manifest '{}' line {}: {} fields, the header has {}; quote paths that contain "
                                   "commas",
                                   manifest_path, line, fields.size(), column.size()));
    }
    const auto get = [&](const char* name) {
      const auto it = column.find(name);
      return it == column.end() ? std::string() : trim(fields[it->second]);
    };
    BatchScene scene;
    scene.s2_raster = resolve(get("s2_raster"));
    if (scene.s2_raster.empty()) {
      throw InputError(fmt::format("manifest '{}' line {}: empty s2_raster", manifest_path, line));
    }
    scene.product_mask = resolve(get("product_mask"));
    scene.id = get("id");
    if (scene.id.empty() && looks_like_stac_item(scene.s2_raster)) scene.id = stac_scene_id(scene.s2_raster);
    if (scene.id.empty()) scene.id = scene_id_from_path(scene.s2_raster);
    scenes.push_back(scene);
    scene_lines.push_back(line);
  }
  if (column.empty()) {
    throw InputError(fmt::format("manifest '{}' is empty; write a header (s2_raster,product_mask,id) and one row "
                                 "per scene",
                                 manifest_path));
  }
  try {
    check_scene_ids(scenes);
  } catch (const InputError& e) {
    throw InputError(fmt::format("manifest '{}': {}", manifest_path, e.what()));
  }
  return scenes;
}

void check_batch_outputs(const std::vector<BatchScene>& scenes, const std::string& out_dir,
                         const ImproveCloudMaskOptions& options, const std::vector<RunInput>& extra_inputs,
                         const std::vector<std::string>& extra_outputs, bool stac_items) {
  std::vector<RunInput> inputs = extra_inputs;
  inputs.push_back({options.cloud_model, "@[cloud_model]"});
  inputs.push_back({options.shadow_model, "@[shadow_model]"});
  for (const BatchScene& s : scenes) {
    inputs.push_back({s.s2_raster, fmt::format("s2_raster of scene {}", s.id)});
    inputs.push_back({s.product_mask, fmt::format("product_mask of scene {}", s.id)});
    if (fs::path(s.s2_raster).filename() == "MTD_MSIL2A.xml") {
      inputs.push_back({fs::path(s.s2_raster).parent_path().string(), fmt::format("SAFE product of scene {}", s.id)});
    }
  }
  const InputFiles index(inputs);
  index.check_not_an_input(out_dir, "@[out_dir]");
  for (const BatchScene& s : scenes) {
    index.check_not_an_input(scene_output_path(out_dir, s.id), fmt::format("the output of scene {}", s.id));
    index.check_not_an_input(scene_record_path(out_dir, s.id), fmt::format("the record of scene {}", s.id));
    if (stac_items) {
      index.check_not_an_input(scene_stac_item_path(out_dir, s.id), fmt::format("the STAC Item of scene {}", s.id));
    }
  }
  if (stac_items) index.check_not_an_input(batch_item_collection_path(out_dir), "the batch's STAC ItemCollection");
  for (const std::string& o : extra_outputs) index.check_not_an_input(o, "the batch report");
  // Without --overwrite, a mask already in out_dir is replaced only when the batch
  // would skip it anyway; one its record does not vouch for (another recipe, or no
  // record) stops the batch here, before any scene runs. Records and the batch report
  // are the batch's own bookkeeping and always rewritten.
  if (options.overwrite) return;
  for (const BatchScene& s : scenes) {
    const std::string output = scene_output_path(out_dir, s.id);
    std::error_code ec;
    if (!fs::exists(fs::symlink_status(output, ec))) continue;
    SceneRecord record;
    std::string recipe;
    try {
      recipe = scene_recipe(s, options);
    } catch (const InputError&) {
      continue;  // a missing input: the scene fails on its own, saying so
    }
    if (read_record(scene_record_path(out_dir, s.id), record) && record.recipe == recipe) continue;
    throw InputError(fmt::format("the output of scene {} '{}' already exists and was not made from these inputs and "
                                 "parameters (its record {}); pass @[overwrite] to replace it, or choose another "
                                 "@[out_dir]",
                                 s.id, output,
                                 fs::exists(scene_record_path(out_dir, s.id), ec) ? "names another recipe"
                                                                                  : "is missing"));
  }
}

std::vector<std::string> batch_input_problems(const std::vector<BatchScene>& scenes) {
  // Path -> the scenes naming it, in manifest order, so each problem is told once.
  std::vector<std::string> paths;
  std::map<std::string, std::vector<std::string>> named_by;
  for (const BatchScene& s : scenes) {
    for (const std::string* path : {&s.s2_raster, &s.product_mask}) {
      if (path->empty()) continue;
      std::vector<std::string>& ids = named_by[*path];
      if (ids.empty()) paths.push_back(*path);
      if (std::find(ids.begin(), ids.end(), s.id) == ids.end()) ids.push_back(s.id);
    }
  }
  std::vector<std::string> problems;
  for (const std::string& path : paths) {
    try {
      file_identity(path);
      require_not_special_file(path, fmt::format("input '{}'", path));
    } catch (const InputError& e) {
      const std::vector<std::string>& ids = named_by[path];
      problems.push_back(fmt::format("scene{} {}: {}", ids.size() > 1 ? "s" : "", fmt::join(ids, ", "), e.what()));
    }
  }
  return problems;
}

std::string scene_output_path(const std::string& out_dir, const std::string& id) {
  return (fs::path(out_dir) / (id + ".tif")).string();
}

std::string scene_record_path(const std::string& out_dir, const std::string& id) {
  return scene_output_path(out_dir, id) + ".nimbus.json";
}

std::string scene_stac_item_path(const std::string& out_dir, const std::string& id) {
  return (fs::path(out_dir) / (id + ".json")).string();
}

std::string batch_item_collection_path(const std::string& out_dir) {
  return (fs::path(out_dir) / "items.geojson").string();
}

std::vector<std::string> check_batch_items(const std::vector<BatchScene>& scenes) {
  std::vector<std::string> errors(scenes.size());
  for (std::size_t i = 0; i < scenes.size(); ++i) {
    if (!looks_like_stac_item(scenes[i].s2_raster)) continue;
    try {
      find_stac_item_files(scenes[i].s2_raster, /*probe_remote_assets=*/false);
    } catch (const InputError& e) {
      errors[i] = e.what();
    }
  }
  return errors;
}

SceneOutcome failed_scene(const BatchScene& scene, const std::string& out_dir, const std::string& error) {
  SceneOutcome outcome;
  outcome.id = scene.id;
  outcome.output = scene_output_path(out_dir, scene.id);
  outcome.status = "failed";
  outcome.error = error;
  return outcome;
}

std::string scene_recipe(const BatchScene& scene, const ImproveCloudMaskOptions& options) {
  ImproveCloudMaskOptions o = options;
  o.s2_raster = scene.s2_raster;
  o.product_mask = scene.product_mask;
  Json r = output_recipe(o, file_identity);
  r["nimbus"] = kVersion;
  // Invalid UTF-8 in a path must not stop the batch: replace it in the recipe text.
  return sha256_hex(r.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
}

namespace {

// Whether `item_path` is a STAC Item whose mask asset has this sha256.
bool item_describes(const std::string& item_path, const std::string& sha256) {
  std::error_code ec;
  if (!fs::is_regular_file(fs::symlink_status(item_path, ec))) return false;
  std::ifstream in(item_path);
  const nlohmann::json j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  const nlohmann::json::json_pointer checksum("/assets/mask/file:checksum");
  return j.is_object() && j.contains(checksum) && j.at(checksum) == "1220" + sha256;
}

}  // namespace

SceneOutcome process_batch_scene(const BatchScene& scene, const std::string& out_dir,
                                 const ImproveCloudMaskOptions& options, bool stac_items) {
  const auto t0 = std::chrono::steady_clock::now();
  SceneOutcome outcome;
  outcome.id = scene.id;
  outcome.output = scene_output_path(out_dir, scene.id);
  const auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
  try {
    ensure_directory(out_dir, "@[out_dir]");
    const std::string recipe = scene_recipe(scene, options);
    SceneRecord record;
    // Only a regular file can be a finished output: a FIFO put in its place would block
    // the checksum forever, a link or device is refused by the run below.
    std::error_code ec;
    const bool has_record = read_record(scene_record_path(out_dir, scene.id), record);
    if (fs::is_regular_file(fs::symlink_status(outcome.output, ec)) && has_record && record.recipe == recipe &&
        sha256_file(outcome.output, "output of scene " + scene.id) == record.sha256 &&
        (!stac_items || item_describes(scene_stac_item_path(out_dir, scene.id), record.sha256))) {
      outcome.status = "skipped";
      if (stac_items) outcome.stac_item = scene_stac_item_path(out_dir, scene.id);
      outcome.sha256 = record.sha256;
      outcome.seconds = elapsed();
      return outcome;
    }
    ImproveCloudMaskOptions o = options;
    o.s2_raster = scene.s2_raster;
    o.product_mask = scene.product_mask;
    o.out = outcome.output;
    if (stac_items) o.stac_out = scene_stac_item_path(out_dir, scene.id);
    // A mask whose record names this very recipe is the batch's own, damaged since:
    // redone without --overwrite (check_batch_outputs refused every other existing mask).
    o.overwrite = options.overwrite || (has_record && record.recipe == recipe);
    improve_cloud_mask(o);
    outcome.stac_item = o.stac_out;
    outcome.sha256 = sha256_file(outcome.output, "output of scene " + scene.id);
    nlohmann::json j;
    j["id"] = scene.id;
    j["sha256"] = outcome.sha256;
    j["recipe"] = recipe;
    j["nimbus"] = kVersion;
    write_file_atomically(scene_record_path(out_dir, scene.id), "record of scene " + scene.id,
                          j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
    outcome.status = "done";
  } catch (const InputError& e) {
    outcome.status = "failed";
    outcome.error = e.what();
  }
  outcome.seconds = elapsed();
  return outcome;
}

int remove_stale_partials(const std::vector<BatchScene>& scenes, const std::string& out_dir,
                          bool only_dead_processes) {
  std::set<std::string> prefixes;
  for (const auto& s : scenes) {
    prefixes.insert(partial_name_prefix(s.id + ".tif"));
    prefixes.insert(partial_name_prefix(s.id + ".tif.nimbus.json"));
    prefixes.insert(partial_name_prefix(s.id + ".json"));
    prefixes.insert(partial_name_prefix(s.id + ".tif.aux.xml"));
  }
  prefixes.insert(partial_name_prefix("items.geojson"));
  int removed = 0;
  std::error_code ec;
  for (fs::directory_iterator it(out_dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    for (const auto& prefix : prefixes) {
      if (name.rfind(prefix, 0) == 0) {
        // The writer's pid follows the prefix; a live local writer keeps its file.
        const long pid = std::strtol(name.c_str() + prefix.size(), nullptr, 10);
        if (only_dead_processes && pid > 0 && (::kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM)) break;
        std::error_code remove_ec;
        if (fs::remove(it->path(), remove_ec)) ++removed;
        break;
      }
    }
  }
  return removed;
}

std::vector<SceneOutcome> run_batch(const std::vector<BatchScene>& scenes, const std::string& out_dir,
                                    const ImproveCloudMaskOptions& options,
                                    const std::function<void(int, int, const SceneOutcome&)>& progress,
                                    const BatchSceneProgress& within_scene, bool stac_items) {
  check_scene_ids(scenes);
  if (const std::vector<std::string> problems = batch_input_problems(scenes); !problems.empty()) {
    throw InputError(problems.size() == 1
                         ? problems.front()
                         : fmt::format("{} (and {} more problems with the manifest's paths)", problems.front(),
                                       problems.size() - 1));
  }
  validate_creation_options(options.creation_options);
  check_batch_outputs(scenes, out_dir, options, {}, {}, stac_items);
  ensure_directory(out_dir, "@[out_dir]");
  remove_stale_partials(scenes, out_dir, /*only_dead_processes=*/true);
  // A broken item fails its scene now, once, not after the scenes before it have run.
  const std::vector<std::string> item_errors = check_batch_items(scenes);
  std::vector<SceneOutcome> outcomes;
  outcomes.reserve(scenes.size());
  for (std::size_t i = 0; i < scenes.size(); ++i) {
    if (!item_errors[i].empty()) {
      outcomes.push_back(failed_scene(scenes[i], out_dir, item_errors[i]));
    } else {
      ImproveCloudMaskOptions o = options;
      if (within_scene) {
        const int index = static_cast<int>(i);
        o.progress = [&within_scene, index](const RunProgress& p) { within_scene(index, p); };
      }
      outcomes.push_back(process_batch_scene(scenes[i], out_dir, o, stac_items));
    }
    if (progress) progress(static_cast<int>(outcomes.size()), static_cast<int>(scenes.size()), outcomes.back());
  }
  if (stac_items) {
    std::vector<std::string> items;
    for (const auto& o : outcomes) {
      if (!o.stac_item.empty()) items.push_back(o.stac_item);
    }
    write_batch_item_collection(items, out_dir);
  }
  return outcomes;
}

void write_batch_item_collection(const std::vector<std::string>& item_paths, const std::string& out_dir) {
  nlohmann::json features = nlohmann::json::array();
  for (const std::string& path : item_paths) {
    std::ifstream in(path);
    nlohmann::json item = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
    if (!item.is_object() || !item.contains("assets") || !item["assets"].is_object()) {
      throw InputError(fmt::format("STAC Item '{}' of the batch cannot be read back; run the batch again", path));
    }
    const fs::path folder = fs::absolute(path).parent_path();
    for (auto& asset : item["assets"]) {
      if (!asset.is_object() || !asset.contains("href") || !asset["href"].is_string()) continue;
      const std::string href = asset["href"].get<std::string>();
      if (href.find("://") == std::string::npos && !fs::path(href).is_absolute()) {
        asset["href"] = (folder / href).lexically_normal().string();
      }
    }
    features.push_back(std::move(item));
  }
  const nlohmann::json collection = {{"type", "FeatureCollection"}, {"features", features}};
  write_file_atomically(batch_item_collection_path(out_dir), "the batch's STAC ItemCollection",
                        collection.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
}

Json outcome_json(const SceneOutcome& o) {
  return {{"id", o.id}, {"status", o.status}, {"output", o.output},
          {"sha256", o.sha256}, {"error", o.error}, {"seconds", o.seconds},
          {"stac_item", o.stac_item.empty() ? Json() : Json(o.stac_item)}};
}

std::string batch_report_csv(const std::vector<SceneOutcome>& outcomes) {
  const auto quote = [](const std::string& s) {
    std::string q = "\"";
    for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
    return q + "\"";
  };
  std::string csv = "id,status,seconds,sha256,output,error\n";
  for (const auto& o : outcomes) {
    csv += fmt::format("{},{},{:.2f},{},{},{}\n", quote(o.id), o.status, o.seconds, o.sha256, quote(o.output),
                       quote(o.error));
  }
  return csv;
}

}  // namespace nimbus
