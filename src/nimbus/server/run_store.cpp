#include "nimbus/server/run_store.h"

#include <algorithm>

#include <SQLiteCpp/SQLiteCpp.h>
#include <fmt/format.h>

#include "nimbus/core/error.h"

namespace nimbus::server {

RunStore::RunStore(const std::string& sqlite_path) {
  try {
    db_ = std::make_unique<SQLite::Database>(sqlite_path, SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE);
    // WAL: readers never wait for the writer; NORMAL sync survives a killed process
    // (a committed change is in the log), which is the failure the server must survive.
    db_->exec("PRAGMA journal_mode=WAL");
    db_->exec("PRAGMA synchronous=NORMAL");
    db_->exec("CREATE TABLE IF NOT EXISTS runs (id TEXT PRIMARY KEY, seq INTEGER NOT NULL UNIQUE, record TEXT NOT NULL)");
    SQLite::Statement query(*db_, "SELECT record FROM runs ORDER BY seq");
    while (query.executeStep()) {
      RunRecord r = RunRecord::from_storage(OJson::parse(query.getColumn(0).getString()));
      next_seq_ = std::max(next_seq_, r.seq + 1);
      order_.push_back(r.id);
      runs_.emplace(r.id, std::move(r));
    }
  } catch (const SQLite::Exception& e) {
    throw InputError(fmt::format("run database '{}': {}; give a --data-dir that this server owns (or an empty one)",
                                 sqlite_path, e.what()));
  } catch (const nlohmann::json::exception& e) {
    throw InputError(fmt::format("run database '{}' holds a record Nimbus cannot read ({}); give another --data-dir",
                                 sqlite_path, e.what()));
  }
}

RunStore::~RunStore() = default;

void RunStore::persist(const RunRecord& run) {
  SQLite::Statement up(*db_, "INSERT OR REPLACE INTO runs (id, seq, record) VALUES (?, ?, ?)");
  up.bind(1, run.id);
  up.bind(2, static_cast<int64_t>(run.seq));
  up.bind(3, run.to_storage().dump());
  up.exec();
}

void RunStore::insert(RunRecord run) {
  std::unique_lock<std::shared_mutex> lock(mu_);
  run.seq = next_seq_++;
  persist(run);
  order_.push_back(run.id);
  runs_.emplace(run.id, std::move(run));
}

bool RunStore::modify(const std::string& id, const std::function<void(RunRecord&)>& change) {
  std::unique_lock<std::shared_mutex> lock(mu_);
  const auto it = runs_.find(id);
  if (it == runs_.end()) return false;
  RunRecord updated = it->second;
  change(updated);
  persist(updated);  // throws before the in-memory copy changes
  it->second = std::move(updated);
  return true;
}

std::optional<RunRecord> RunStore::get(const std::string& id) const {
  std::shared_lock<std::shared_mutex> lock(mu_);
  const auto it = runs_.find(id);
  if (it == runs_.end()) return std::nullopt;
  return it->second;
}

bool RunStore::read(const std::string& id, const std::function<void(const RunRecord&)>& reader) const {
  std::shared_lock<std::shared_mutex> lock(mu_);
  const auto it = runs_.find(id);
  if (it == runs_.end()) return false;
  reader(it->second);
  return true;
}

std::vector<std::string> RunStore::ids() const {
  std::shared_lock<std::shared_mutex> lock(mu_);
  return order_;
}

std::vector<RunRecord> RunStore::all() const {
  std::shared_lock<std::shared_mutex> lock(mu_);
  std::vector<RunRecord> out;
  out.reserve(order_.size());
  for (const std::string& id : order_) out.push_back(runs_.at(id));
  return out;
}

}  // namespace nimbus::server
