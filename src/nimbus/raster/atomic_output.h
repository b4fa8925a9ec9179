// All-or-nothing output files: write under a hidden temporary name in the
// destination directory, rename over the final name only when complete. An
// OutputSet checks every output of a run up front (against each other and
// against the run's inputs) and publishes them together.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "nimbus/core/error.h"

namespace nimbus {

// Throws InputError naming `role` unless `path` can be an output file: not empty,
// not '-', not a GDAL virtual path, no NUL byte or other control character, not a directory, not an existing
// symbolic link or special file (device, FIFO, socket: Nimbus replaces outputs by
// renaming and never renames over those), a file name the file system accepts, in
// an existing, writable directory.
void check_output_path(const std::string& path, const std::string& role);

// The start of the hidden temporary names of an output called `file_name`:
// "." + at most 40 bytes of the name + ".nimbus-partial-" (followed by PID-N).
// Kept short so that the temporary name plus GDAL's ".msk.ovr.tmp" fits NAME_MAX.
std::string partial_name_prefix(const std::string& file_name);

class AtomicOutput {
 public:
  // Checks the path up front (check_output_path), so a long run does not fail at its
  // very end. `role` names the option (e.g. "--out").
  AtomicOutput(std::string final_path, std::string role);
  // Removes the temporary file (and GDAL's overview temporaries) unless commit() succeeded.
  ~AtomicOutput();
  AtomicOutput(const AtomicOutput&) = delete;
  AtomicOutput& operator=(const AtomicOutput&) = delete;

  const std::string& temp_path() const { return temp_path_; }
  const std::string& final_path() const { return final_path_; }
  const std::string& role() const { return role_; }
  // Runs `write(temp_path())`; an InputError from it names the final path, not the
  // hidden temporary one (GDAL's messages quote the file they were writing).
  template <typename Write>
  void write_with(Write&& write) const {
    try {
      write(temp_path_);
    } catch (const InputError& e) {
      throw InputError(in_terms_of_final_path(e.what()));
    }
  }
  std::string in_terms_of_final_path(std::string message) const;
  // Renames the temporary file to the final path (atomic on one filesystem).
  void commit();

 private:
  friend class OutputSet;
  void remove_temporaries();
  void release_slots();

  std::string final_path_;
  std::string temp_path_;
  std::string role_;
  bool committed_ = false;
  std::vector<int> interrupt_slots_;  // removal on SIGINT/SIGTERM/SIGHUP, see core/interrupt.h
};

// A file or directory a run reads. Outputs may be neither the same file (also
// through a symbolic or hard link) nor lie inside an input directory.
struct RunInput {
  std::string path;
  std::string role;  // e.g. "--s2-raster"
};

// The inputs of a run indexed once (file identity, resolved path, directories), so
// that many outputs (a batch) are checked in one pass. GDAL virtual paths (/vsi…)
// and missing inputs are skipped.
class InputFiles {
 public:
  explicit InputFiles(const std::vector<RunInput>& inputs);
  // Throws InputError when the output `path` (written as `role`) is one of the inputs
  // (also through a symbolic or hard link) or lies inside an input directory.
  void check_not_an_input(const std::string& path, const std::string& role) const;

 private:
  std::map<std::pair<std::uint64_t, std::uint64_t>, RunInput> by_identity_;  // (device, inode)
  std::map<std::string, RunInput> by_path_;                                   // resolved path
  std::map<std::string, RunInput> directories_;                               // resolved path
};

void check_not_an_input(const std::string& path, const std::string& role, const std::vector<RunInput>& inputs);

// The outputs of one run: each checked when added (check_output_path, not an input,
// no two outputs on one path), all published together by commit(). If the run
// fails or commit() fails half-way, no output of the run is left (files the run
// would have replaced are put back) and directories the set created are removed.
class OutputSet {
 public:
  explicit OutputSet(std::vector<RunInput> inputs);
  ~OutputSet();
  OutputSet(const OutputSet&) = delete;
  OutputSet& operator=(const OutputSet&) = delete;

  AtomicOutput& add_file(const std::string& path, const std::string& role);
  // Creates `dir` (and missing parents) for outputs; it must not be an output file
  // of the set nor an input. Created directories are removed again on failure.
  void add_directory(const std::string& dir, const std::string& role);
  void commit();

 private:
  void check_not_taken(const std::string& path, const std::string& role) const;

  InputFiles inputs_;
  std::vector<std::unique_ptr<AtomicOutput>> files_;
  std::vector<std::pair<std::string, std::string>> directories_;  // resolved path, role
  std::vector<std::string> created_directories_;                   // outermost first
  bool committed_ = false;
};

// Writes `bytes` as the whole file at `path` through an AtomicOutput.
void write_file_atomically(const std::string& path, const std::string& role, const std::string& bytes);

// Writes `bytes` as the whole file at `path` (no temporary name; the caller's is one).
void write_whole_file(const std::string& path, const std::string& role, const std::string& bytes);

// Creates `dir` (and parents) if needed; throws InputError naming `role` if it cannot.
void ensure_directory(const std::string& dir, const std::string& role);

}  // namespace nimbus
