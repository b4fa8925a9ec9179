// The process-wide cache of loaded models: `nimbus batch`, repeated Python calls,
// Dask workers and workflow tasks load each model once per process and share it
// (LoadedModel is the shared, immutable half; each run builds its own backend).
//
// Key: the model reference (file path, or "embedded:<name>") and its content
// (sha256). A file is re-read only when its identity (device, inode, size,
// modification and change time) differs from the last read, so a 40 MB model is
// not re-hashed every scene; a re-read with the same sha256 keeps the loaded
// model, different content (a file replaced in place or renamed over) is parsed
// anew, and runs already holding the old model finish with it. The 8 most
// recently used models are kept (a long-lived service may see many).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "nimbus/inference/loaded_model.h"

namespace nimbus {

// What one run's model lookups did, for its report.
struct ModelLoadCounts {
  int loaded = 0;  // read and parsed (not in the cache, or the file changed)
  int reused = 0;  // served by the cache
};

// The model in file `path`, from the cache or loaded into it. Errors as
// load_onnx_file (InputError naming `role`). Thread-safe; `counts` may be null.
std::shared_ptr<const LoadedModel> cached_model_file(const std::string& path, const std::string& role,
                                                     ModelLoadCounts* counts = nullptr);

// The model compiled into the binary as `name` (its bytes never change).
std::shared_ptr<const LoadedModel> cached_model_bytes(const std::string& name, const std::string& bytes,
                                                      const std::string& role, ModelLoadCounts* counts = nullptr);

// Process totals since start: models parsed, and lookups served by the cache.
struct ModelCacheTotals {
  std::uint64_t loaded = 0;
  std::uint64_t reused = 0;
};
ModelCacheTotals model_cache_totals();

}  // namespace nimbus
