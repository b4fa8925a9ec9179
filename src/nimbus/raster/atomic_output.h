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

// What an output path may already be. Files are written under a temporary name and
// renamed into place, so a path that is not a regular file is never renamed over:
// it is either written through (a stream) or refused.
struct OutputRules {
  // An existing regular file is replaced (GDAL's --overwrite); otherwise it is refused
  // before any work, and a file that appears during the run is not replaced either.
  bool overwrite = false;
  // Whether this output may be a stream, written through at commit (no temporary
  // file, no rename, --overwrite not needed): '-' (standard output), /dev/stdout,
  // /dev/stderr, /dev/fd/N and /proc/self/fd/N (the process's descriptor N, whatever
  // it is), a character device or a FIFO, also through a symbolic link (a link to
  // /dev/null stays a link). For text such as the report; a GeoTIFF needs a file.
  bool streams = false;
};

enum class OutputKind { NewFile, ExistingFile, Stream };

// Throws InputError naming `role` unless `path` can be this output: not empty,
// no NUL byte or other control character, not a GDAL virtual path, not a directory,
// not a symbolic link to a file or directory (renaming would replace the link), not
// a block device or socket, a stream only when rules.streams, an existing regular
// file only when rules.overwrite; a new file needs a name the file system accepts in
// an existing, writable directory. Returns what the path is.
OutputKind check_output_path(const std::string& path, const std::string& role, const OutputRules& rules = {});

// For a stream output: the descriptor it means without opening anything ('-' and
// /dev/stdout: 1, /dev/stderr: 2, /dev/fd/N and /proc/self/fd/N: N), or -1 when the
// path must be opened (a device or FIFO).
int stream_descriptor(const std::string& path);

// The start of the hidden temporary names of an output called `file_name`:
// "." + at most 40 bytes of the name + ".nimbus-partial-" (followed by PID-N).
// Kept short so that the temporary name plus GDAL's ".msk.ovr.tmp" fits NAME_MAX.
std::string partial_name_prefix(const std::string& file_name);

class AtomicOutput {
 public:
  // Checks the path up front (check_output_path), so a long run does not fail at its
  // very end. `role` names the option (e.g. "--out").
  AtomicOutput(std::string final_path, std::string role, const OutputRules& rules);
  // Removes the temporary file (and GDAL's overview temporaries) unless commit() succeeded.
  ~AtomicOutput();
  AtomicOutput(const AtomicOutput&) = delete;
  AtomicOutput& operator=(const AtomicOutput&) = delete;

  // Where the contents are written before commit(); a stream has none (write_bytes).
  const std::string& temp_path() const;
  bool is_stream() const { return kind_ == OutputKind::Stream; }
  // The whole contents: into the temporary file, or kept for a stream until commit().
  void write_bytes(const std::string& bytes);
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
  // Renames the temporary file to the final path (atomic on one filesystem), or
  // writes a stream's contents through.
  void commit();

 private:
  friend class OutputSet;
  void remove_temporaries();
  void release_slots();
  // Moves the finished temporary file into place; false with errno on failure.
  bool move_into_place() const;
  // For a stream: the open descriptor, opened without blocking (a FIFO without a
  // reader is an InputError, never a hang), and writing the kept bytes to it.
  int open_stream() const;
  void write_stream(int fd) const;

  std::string final_path_;
  std::string temp_path_;
  std::string role_;
  OutputKind kind_ = OutputKind::NewFile;
  std::string stream_bytes_;
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
// Streams are opened before the files are moved and written after, so a stream
// that cannot be opened (a FIFO nobody reads) leaves no file behind either.
class OutputSet {
 public:
  // rules.overwrite applies to every file of the set; rules.streams is per output.
  OutputSet(std::vector<RunInput> inputs, const OutputRules& rules);
  ~OutputSet();
  OutputSet(const OutputSet&) = delete;
  OutputSet& operator=(const OutputSet&) = delete;

  AtomicOutput& add_file(const std::string& path, const std::string& role);
  // The same for an output that may also be a stream (OutputRules::streams).
  AtomicOutput& add_file_or_stream(const std::string& path, const std::string& role);
  // Creates `dir` (and missing parents) for outputs; it must not be an output file
  // of the set nor an input. Created directories are removed again on failure.
  void add_directory(const std::string& dir, const std::string& role);
  void commit();

 private:
  void check_not_taken(const std::string& path, const std::string& role) const;

  AtomicOutput& add(const std::string& path, const std::string& role, bool streams);

  InputFiles inputs_;
  OutputRules rules_;
  std::vector<std::unique_ptr<AtomicOutput>> files_;
  std::vector<std::pair<std::string, std::string>> directories_;  // resolved path, role
  std::vector<std::string> created_directories_;                   // outermost first
  bool committed_ = false;
};

// Writes `bytes` as the whole file at `path` through an AtomicOutput (replacing an
// existing file: for files a command owns, such as batch records).
void write_file_atomically(const std::string& path, const std::string& role, const std::string& bytes);

// Writes `bytes` as the whole file at `path` (no temporary name; the caller's is one).
void write_whole_file(const std::string& path, const std::string& role, const std::string& bytes);

// Creates `dir` (and parents) if needed; throws InputError naming `role` if it cannot.
void ensure_directory(const std::string& dir, const std::string& role);

}  // namespace nimbus
