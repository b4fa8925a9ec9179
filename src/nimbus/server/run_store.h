// The runs of the REST service, kept in memory for fast reads and written through
// to SQLite (<data_dir>/runs.sqlite) on every change, so a restarted server finds
// them again.
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "nimbus/server/run_record.h"

namespace SQLite {
class Database;
}

namespace nimbus::server {

class RunStore {
 public:
  // Opens (creates) the database and loads every run. Throws InputError when the file
  // is not a Nimbus run database.
  explicit RunStore(const std::string& sqlite_path);
  ~RunStore();
  RunStore(const RunStore&) = delete;
  RunStore& operator=(const RunStore&) = delete;

  // Adds a new run (assigns its creation order) and persists it.
  void insert(RunRecord run);

  // Applies `change` to the run under the store's lock and persists the result.
  // Returns false (and changes nothing) for an unknown id.
  bool modify(const std::string& id, const std::function<void(RunRecord&)>& change);

  std::optional<RunRecord> get(const std::string& id) const;
  // Reads a run under the shared lock without copying it.
  bool read(const std::string& id, const std::function<void(const RunRecord&)>& reader) const;
  std::vector<std::string> ids() const;  // creation order
  std::vector<RunRecord> all() const;    // creation order

 private:
  void persist(const RunRecord& run);

  mutable std::shared_mutex mu_;
  std::unique_ptr<SQLite::Database> db_;
  std::vector<std::string> order_;
  std::unordered_map<std::string, RunRecord> runs_;
  std::int64_t next_seq_ = 1;
};

}  // namespace nimbus::server
