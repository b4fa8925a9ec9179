// All-or-nothing output files: write under a hidden temporary name in the
// destination directory, rename over the final name only when complete.
#pragma once

#include <string>

namespace nimbus {

class AtomicOutput {
 public:
  // Checks up front that the destination directory exists and is writable, so a
  // long run does not fail at its very end. `role` names the option (e.g. "--out").
  AtomicOutput(std::string final_path, std::string role);
  // Removes the temporary file unless commit() succeeded.
  ~AtomicOutput();
  AtomicOutput(const AtomicOutput&) = delete;
  AtomicOutput& operator=(const AtomicOutput&) = delete;

  const std::string& temp_path() const { return temp_path_; }
  const std::string& final_path() const { return final_path_; }
  // Renames the temporary file to the final path (atomic on one filesystem).
  void commit();

 private:
  std::string final_path_;
  std::string temp_path_;
  std::string role_;
  bool committed_ = false;
  int interrupt_slot_ = -1;  // removal on SIGINT/SIGTERM, see core/interrupt.h
};

// Writes `bytes` as the whole file at `path` through an AtomicOutput.
void write_file_atomically(const std::string& path, const std::string& role, const std::string& bytes);

// Creates `dir` (and parents) if needed; throws InputError naming `role` if it cannot.
void ensure_directory(const std::string& dir, const std::string& role);

}  // namespace nimbus
