#include "nimbus/inference/model_cache.h"

#include <sys/stat.h>

#include <map>
#include <mutex>

#include "nimbus/core/checksum.h"
#include "nimbus/core/log.h"

namespace nimbus {
namespace {

// Models kept by the cache; a batch uses two, a service a few more.
constexpr std::size_t kMaxCachedModels = 8;

// What stat() says about a file; any change means it must be read again.
struct FileIdentity {
  dev_t device = 0;
  ino_t inode = 0;
  off_t size = 0;
  timespec modified{};
  timespec changed{};

  bool operator==(const FileIdentity& o) const {
    return device == o.device && inode == o.inode && size == o.size && modified.tv_sec == o.modified.tv_sec &&
           modified.tv_nsec == o.modified.tv_nsec && changed.tv_sec == o.changed.tv_sec &&
           changed.tv_nsec == o.changed.tv_nsec;
  }
};

bool identify(const std::string& path, FileIdentity& id) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return false;
  id.device = st.st_dev;
  id.inode = st.st_ino;
  id.size = st.st_size;
  id.modified = st.st_mtim;
  id.changed = st.st_ctim;
  return true;
}

struct Entry {
  bool has_identity = false;  // false for embedded models and unidentifiable files
  FileIdentity identity;
  std::shared_ptr<const LoadedModel> model;
  std::uint64_t last_used = 0;
};

class ModelCache {
 public:
  static ModelCache& instance() {
    static ModelCache cache;
    return cache;
  }

  std::shared_ptr<const LoadedModel> file(const std::string& path, const std::string& role, ModelLoadCounts* counts) {
    // One lock for the whole lookup: two threads asking for the same model load it once.
    std::lock_guard<std::mutex> lock(mutex_);
    FileIdentity identity;
    const bool identified = identify(path, identity);
    auto it = entries_.find(path);
    if (identified && it != entries_.end() && it->second.has_identity && it->second.identity == identity) {
      return reused(it->second, counts);
    }
    // Identity taken before the read: a change during the read only causes one more re-read later.
    std::string bytes = read_onnx_file(path, role);
    std::string sha256 = sha256_hex(bytes);
    if (it != entries_.end() && it->second.model->onnx().sha256 == sha256) {
      it->second.has_identity = identified;
      it->second.identity = identity;
      return reused(it->second, counts);
    }
    auto model = std::make_shared<const LoadedModel>(parse_onnx_model(path, std::move(bytes), std::move(sha256), role));
    return loaded(path, Entry{identified, identity, model}, counts);
  }

  std::shared_ptr<const LoadedModel> embedded(const std::string& name, const std::string& bytes, const std::string& role,
                                              ModelLoadCounts* counts) {
    std::lock_guard<std::mutex> lock(mutex_);
    const std::string key = "embedded:" + name;
    if (auto it = entries_.find(key); it != entries_.end()) return reused(it->second, counts);
    auto model = std::make_shared<const LoadedModel>(load_onnx_bytes(name, bytes, role));
    return loaded(key, Entry{false, {}, model}, counts);
  }

  ModelCacheTotals totals() {
    std::lock_guard<std::mutex> lock(mutex_);
    return totals_;
  }

 private:
  std::shared_ptr<const LoadedModel> reused(Entry& entry, ModelLoadCounts* counts) {
    entry.last_used = ++clock_;
    ++totals_.reused;
    if (counts) ++counts->reused;
    logger()->debug("model {}: reused from this process's model cache (sha256 {})", entry.model->onnx().origin,
                    entry.model->onnx().sha256);
    return entry.model;
  }

  std::shared_ptr<const LoadedModel> loaded(const std::string& key, Entry entry, ModelLoadCounts* counts) {
    entry.last_used = ++clock_;
    auto model = entry.model;
    entries_[key] = std::move(entry);
    // A long-lived process (a service) may see many models: keep the most recently used.
    // An evicted model lives on in the runs still holding it.
    while (entries_.size() > kMaxCachedModels) {
      auto oldest = entries_.begin();
      for (auto it = entries_.begin(); it != entries_.end(); ++it) {
        if (it->second.last_used < oldest->second.last_used) oldest = it;
      }
      entries_.erase(oldest);
    }
    ++totals_.loaded;
    if (counts) ++counts->loaded;
    logger()->debug("model {}: loaded into this process's model cache (sha256 {})", model->onnx().origin,
                    model->onnx().sha256);
    return model;
  }

  std::mutex mutex_;
  std::map<std::string, Entry> entries_;  // model reference -> its last loaded content
  std::uint64_t clock_ = 0;               // lookups so far, for least-recently-used eviction
  ModelCacheTotals totals_;
};

}  // namespace

std::shared_ptr<const LoadedModel> cached_model_file(const std::string& path, const std::string& role,
                                                     ModelLoadCounts* counts) {
  return ModelCache::instance().file(path, role, counts);
}

std::shared_ptr<const LoadedModel> cached_model_bytes(const std::string& name, const std::string& bytes,
                                                      const std::string& role, ModelLoadCounts* counts) {
  return ModelCache::instance().embedded(name, bytes, role, counts);
}

ModelCacheTotals model_cache_totals() { return ModelCache::instance().totals(); }

}  // namespace nimbus
