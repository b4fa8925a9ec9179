#include "nimbus/raster/atomic_output.h"

#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include <fmt/format.h>

#include "nimbus/core/error.h"
#include "nimbus/core/interrupt.h"

namespace nimbus {
namespace fs = std::filesystem;

AtomicOutput::AtomicOutput(std::string final_path, std::string role)
    : final_path_(std::move(final_path)), role_(std::move(role)) {
  if (final_path_.empty()) throw InputError(fmt::format("{} is empty; give an output file path", role_));
  const fs::path target(final_path_);
  if (fs::is_directory(target)) {
    throw InputError(fmt::format("{} '{}' is a directory; give a file path such as {}/mask.tif", role_, final_path_,
                                 final_path_));
  }
  fs::path dir = target.parent_path();
  if (dir.empty()) dir = ".";
  if (!fs::is_directory(dir)) {
    throw InputError(fmt::format("{} '{}': directory '{}' does not exist; create it first", role_, final_path_,
                                 dir.string()));
  }
  if (::access(dir.c_str(), W_OK) != 0) {
    throw InputError(fmt::format("{} '{}': directory '{}' is not writable ({}); choose another output location",
                                 role_, final_path_, dir.string(), std::strerror(errno)));
  }
  static std::atomic<int> counter{0};
  temp_path_ = (dir / fmt::format(".{}.nimbus-partial-{}-{}", target.filename().string(), ::getpid(), counter++))
                   .string();
  interrupt_slot_ = register_temporary(temp_path_);
}

AtomicOutput::~AtomicOutput() {
  if (!committed_) std::remove(temp_path_.c_str());
  unregister_temporary(interrupt_slot_);
}

void AtomicOutput::commit() {
  if (std::rename(temp_path_.c_str(), final_path_.c_str()) != 0) {
    const std::string why = std::strerror(errno);
    std::remove(temp_path_.c_str());
    unregister_temporary(interrupt_slot_);
    interrupt_slot_ = -1;
    throw InputError(fmt::format("{} '{}': could not move the finished file into place ({}); check permissions",
                                 role_, final_path_, why));
  }
  committed_ = true;
  unregister_temporary(interrupt_slot_);
  interrupt_slot_ = -1;
}

void write_file_atomically(const std::string& path, const std::string& role, const std::string& bytes) {
  AtomicOutput out(path, role);
  std::FILE* f = std::fopen(out.temp_path().c_str(), "wb");
  bool ok = f && std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size();
  if (f) ok = (std::fclose(f) == 0) && ok;
  if (!ok) {
    throw InputError(fmt::format("{} '{}' could not be written; check disk space and permissions", role, path));
  }
  out.commit();
}

void ensure_directory(const std::string& dir, const std::string& role) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec || !fs::is_directory(dir)) {
    throw InputError(fmt::format("{} '{}' cannot be created ({}); choose a writable directory", role, dir,
                                 ec ? ec.message() : "not a directory"));
  }
}

}  // namespace nimbus
