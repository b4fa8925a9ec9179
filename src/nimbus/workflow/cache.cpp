#include "nimbus/workflow/cache.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <fmt/format.h>

#include "nimbus/core/checksum.h"
#include "nimbus/core/error.h"
#include "nimbus/inference/onnx_model.h"

namespace nimbus {
namespace fs = std::filesystem;

std::string python_str(const Json& v) {
  if (v.is_null()) return "None";
  if (v.is_boolean()) return v.get<bool>() ? "True" : "False";
  if (v.is_number_integer()) return std::to_string(v.get<long long>());
  if (v.is_number_float()) {
    const double d = v.get<double>();
    if (std::isnan(d)) return "nan";
    if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
    std::string s = fmt::format("{}", d);  // shortest round-trip, like Python's repr
    if (s.find_first_of(".en") == std::string::npos) s += ".0";
    // Python writes 1e-05 where fmt writes 1e-05 too; both use 'e' with a sign and two digits.
    return s;
  }
  if (v.is_string()) return v.get<std::string>();
  return v.dump();
}

std::string cache_key_text(const OpDefinition& op, const std::map<std::string, std::string>& input_ids,
                           const Json& parameters, const std::optional<RunWindow>& window) {
  std::string text;
  for (const auto& [port, id] : input_ids) text += port + id;  // std::map: sorted by port
  if (const std::vector<std::string> dependencies = op.dependencies(); !dependencies.empty()) {
    std::map<std::string, std::string> deps;
    for (const std::string& p : dependencies) deps[p] = python_str(parameters.at(p));
    text += "parameters";
    for (const auto& [k, v] : deps) text += k + v;
  }
  text += op.version.substr(0, op.version.find('.'));
  if (window) {
    text += fmt::format("window{}of{}x{}", window->pixels.text(), window->grid_width, window->grid_height);
  }
  return text;
}

std::string cache_key(const OpDefinition& op, const std::map<std::string, std::string>& input_ids,
                      const Json& parameters, const std::optional<RunWindow>& window) {
  return sha256_hex(cache_key_text(op, input_ids, parameters, window));
}

std::string file_artifact_id(const std::string& path) {
  const std::optional<std::string> identity = file_stat_identity(path);
  if (!identity) throw InputError(fmt::format("input '{}' does not exist; check the path given with --input", path));
  return sha256_hex(*identity);
}

std::string OpCache::entry_dir(const std::string& op, const std::string& key) const {
  return (fs::path(root_) / op / key).string();
}

std::optional<OpOutputs> OpCache::lookup(const std::string& op, const std::string& key) const {
  const fs::path manifest = fs::path(entry_dir(op, key)) / "outputs.json";
  std::ifstream in(manifest);
  if (!in) return std::nullopt;
  Json j;
  try {
    in >> j;
  } catch (const Json::exception&) {
    return std::nullopt;  // unreadable entry: recompute and overwrite
  }
  OpOutputs out;
  for (const auto& item : j.items()) {
    const fs::path file = fs::path(entry_dir(op, key)) / item.value().at("file").get<std::string>();
    if (!fs::is_regular_file(file)) return std::nullopt;
    out[item.key()] = Artifact{file.string(), item.value().at("type").get<std::string>(),
                               item.value().at("id").get<std::string>()};
  }
  return out;
}

namespace {

// Removes work directories ".<key>.partial-<pid>-<n>" of processes that no longer
// exist (killed or interrupted runs), so they never accumulate or look like entries.
void remove_stale_partials(const fs::path& op_dir) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(op_dir, ec)) {
    const std::string name = entry.path().filename().string();
    const auto at = name.find(".partial-");
    if (name.empty() || name[0] != '.' || at == std::string::npos) continue;
    const long pid = std::strtol(name.c_str() + at + 9, nullptr, 10);
    if (pid > 0 && pid != ::getpid() && ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) {
      fs::remove_all(entry.path(), ec);
    }
  }
}

}  // namespace

std::string OpCache::begin(const std::string& op, const std::string& key) const {
  static std::atomic<int> counter{0};
  remove_stale_partials(fs::path(root_) / op);
  const fs::path dir = fs::path(root_) / op / fmt::format(".{}.partial-{}-{}", key, ::getpid(), counter++);
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) {
    throw InputError(fmt::format("cache directory '{}' cannot be created ({}); pass a writable --cache-dir or "
                                 "--no-cache",
                                 dir.string(), ec.message()));
  }
  return dir.string();
}

OpOutputs OpCache::commit(const std::string& op, const std::string& key, const std::string& work_dir,
                          const OpOutputs& outputs) const {
  Json manifest = Json::object();
  for (const auto& [port, a] : outputs) {
    manifest[port] = {{"file", fs::path(a.path).filename().string()}, {"type", a.type}, {"id", a.id}};
  }
  {
    std::ofstream out(fs::path(work_dir) / "outputs.json");
    out << manifest.dump(2) << "\n";
    if (!out) throw InputError(fmt::format("cannot write the cache manifest in '{}'; check disk space", work_dir));
  }
  const fs::path final_dir = entry_dir(op, key);
  std::error_code ec;
  fs::rename(work_dir, final_dir, ec);
  if (ec) {
    // Another run (thread or process) published the same key first: use its entry, and
    // never remove it, as that run may be reading it. Only an incomplete entry (an older,
    // interrupted run's) is replaced.
    if (auto existing = lookup(op, key)) {
      discard(work_dir);
      return *existing;
    }
    fs::remove_all(final_dir, ec);
    ec.clear();
    fs::rename(work_dir, final_dir, ec);
    if (ec) {
      discard(work_dir);
      if (auto existing = lookup(op, key)) return *existing;
      throw InputError(fmt::format("cannot publish cache entry '{}' ({})", final_dir.string(), ec.message()));
    }
  }
  OpOutputs published;
  for (const auto& [port, a] : outputs) {
    published[port] = Artifact{(final_dir / fs::path(a.path).filename()).string(), a.type, a.id};
  }
  return published;
}

void OpCache::discard(const std::string& work_dir) {
  std::error_code ec;
  fs::remove_all(work_dir, ec);
}

}  // namespace nimbus
