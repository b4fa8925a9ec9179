// FarmVibes-style op cache: key = sha256(input ids + dependency parameters +
// major version); entries are directories holding the op's output files.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "nimbus/ops/op_definition.h"

namespace nimbus {

// Python's str() of a parameter value (None, True, 0.25, 1.0, 512, text).
std::string python_str(const Json& value);

// The string FarmVibes hashes for an op call (spec 1.9), and its sha256. With a run
// geometry, the window the op computes (`window`, see RunWindow) is appended, so runs
// over different areas never share an entry; without one the key is FarmVibes'.
std::string cache_key_text(const OpDefinition& op, const std::map<std::string, std::string>& input_ids,
                           const Json& parameters, const std::optional<RunWindow>& window = std::nullopt);
std::string cache_key(const OpDefinition& op, const std::map<std::string, std::string>& input_ids,
                      const Json& parameters, const std::optional<RunWindow>& window = std::nullopt);

// Id of an input file: sha256 of its absolute path, size and modification time,
// so an edited file is a new input without hashing gigabytes.
std::string file_artifact_id(const std::string& path);

class OpCache {
 public:
  explicit OpCache(std::string root) : root_(std::move(root)) {}
  const std::string& root() const { return root_; }

  // Outputs stored for (op, key), if a complete entry exists.
  std::optional<OpOutputs> lookup(const std::string& op, const std::string& key) const;

  // A fresh private directory to run the op in.
  std::string begin(const std::string& op, const std::string& key) const;

  // Records outputs (files inside work_dir) and publishes the entry atomically.
  // Returns the outputs with paths inside the published entry.
  OpOutputs commit(const std::string& op, const std::string& key, const std::string& work_dir,
                   const OpOutputs& outputs) const;

  // Removes a work directory left by a failed run.
  static void discard(const std::string& work_dir);

 private:
  std::string entry_dir(const std::string& op, const std::string& key) const;
  std::string root_;
};

}  // namespace nimbus
