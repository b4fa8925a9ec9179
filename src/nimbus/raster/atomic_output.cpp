#include "nimbus/raster/atomic_output.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include <fmt/format.h>

#include "nimbus/core/error.h"
#include "nimbus/core/interrupt.h"

namespace nimbus {
namespace fs = std::filesystem;
namespace {

// GDAL's COG driver writes the overviews of `X` to `X.ovr.tmp` (and of its mask to
// `X.msk.ovr.tmp`) next to the output; they must go with the partial file.
constexpr const char* kGdalTemporarySuffixes[] = {".ovr.tmp", ".msk.ovr.tmp"};
constexpr std::size_t kPartialNameBytes = 40;
constexpr std::size_t kMaxPathBytes = PATH_MAX - 128;  // room for the temporary names

const char* file_kind(mode_t mode) {
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISFIFO(mode)) return "a FIFO (named pipe)";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISDIR(mode)) return "a directory";
  return "not a regular file";
}

// Absolute, with symbolic links of the existing part resolved.
fs::path resolved(const std::string& p) {
  std::error_code ec;
  const fs::path abs = fs::absolute(p, ec);
  if (ec) return fs::path(p).lexically_normal();
  fs::path r = fs::weakly_canonical(abs, ec);
  return ec ? abs.lexically_normal() : r;
}

std::string unique_hidden_name(const fs::path& dir, const std::string& prefix) {
  static std::atomic<int> counter{0};
  return (dir / fmt::format("{}{}-{}", prefix, ::getpid(), counter++)).string();
}

fs::path directory_of(const std::string& path) {
  fs::path dir = fs::path(path).parent_path();
  return dir.empty() ? fs::path(".") : dir;
}

// rename(2) that fails with EEXIST instead of replacing a file that appeared meanwhile.
int rename_no_replace(const char* from, const char* to) {
#ifdef RENAME_NOREPLACE
  if (::renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE) == 0) return 0;
  if (errno != EINVAL && errno != ENOSYS) return -1;  // else: the file system cannot; plain rename
#endif
  return std::rename(from, to);
}

}  // namespace

int stream_descriptor(const std::string& path) {
  if (path == "-" || path == "/dev/stdout") return STDOUT_FILENO;
  if (path == "/dev/stderr") return STDERR_FILENO;
  for (const char* prefix : {"/dev/fd/", "/proc/self/fd/"}) {
    const std::string p(prefix);
    if (path.size() > p.size() && path.compare(0, p.size(), p) == 0 &&
        std::all_of(path.begin() + static_cast<std::ptrdiff_t>(p.size()), path.end(),
                    [](char c) { return c >= '0' && c <= '9'; }) &&
        path.size() - p.size() < 9) {
      return std::stoi(path.substr(p.size()));
    }
  }
  return -1;
}

OutputKind check_output_path(const std::string& path, const std::string& role, const OutputRules& rules) {
  if (path.empty()) throw InputError(fmt::format("{} is empty; give an output file path", role));
  if (path.find('\0') != std::string::npos) {
    throw InputError(fmt::format("{} '{}' contains a NUL character; give a plain file path", role,
                                 path.substr(0, path.find('\0'))));
  }
  // Legal on Linux but never meant: "mask.tif\n" from an unstripped line of a file.
  if (std::any_of(path.begin(), path.end(), [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; })) {
    throw InputError(fmt::format("{} '{}' contains a control character (newline, tab, …); remove it from the path",
                                 role, path));
  }
  if (const int fd = stream_descriptor(path); fd >= 0) {
    if (!rules.streams) {
      throw InputError(fmt::format("{} '{}': this output cannot go to {}; it is written as a file (under a temporary "
                                   "name, then renamed): give a file path",
                                   role, path, path == "-" ? "standard output" : "a stream"));
    }
    if (::fcntl(fd, F_GETFD) == -1) {
      throw InputError(fmt::format("{} '{}': file descriptor {} is not open in this process; give a file path", role,
                                   path, fd));
    }
    return OutputKind::Stream;
  }
  if (path.rfind("/vsi", 0) == 0) {
    throw InputError(fmt::format("{} '{}': GDAL virtual paths cannot be outputs; give a file path on disk", role,
                                 path));
  }
  if (path.size() > kMaxPathBytes) {
    throw InputError(fmt::format("{} '{}…': the path is {} bytes, more than the {} the system allows; use a shorter "
                                 "path",
                                 role, path.substr(0, 60), path.size(), kMaxPathBytes));
  }
  const fs::path target(path);
  struct stat link_st {};
  bool exists = false;
  if (::lstat(path.c_str(), &link_st) == 0) {
    exists = true;
    if (S_ISDIR(link_st.st_mode)) {
      throw InputError(fmt::format("{} '{}' is a directory; give a file path such as {}/mask.tif", role, path,
                                   path));
    }
    // Outputs are replaced by renaming: over a symbolic link that replaces the link
    // itself (/dev/stdout would become a regular file), over a device or FIFO the
    // special file. A stream (device, FIFO, also behind a link) may be written
    // through; anything else of that kind is refused.
    struct stat st = link_st;
    std::string through_link;
    if (S_ISLNK(link_st.st_mode)) {
      std::error_code ec;
      const fs::path to = fs::read_symlink(path, ec);
      through_link = fmt::format(" (a symbolic link{})", ec ? std::string() : fmt::format(" to '{}'", to.string()));
      if (::stat(path.c_str(), &st) != 0 || S_ISREG(st.st_mode) || S_ISDIR(st.st_mode)) {
        throw InputError(fmt::format("{} '{}' is a symbolic link{}; Nimbus replaces outputs by renaming, which would "
                                     "replace the link itself: give the real file path or remove the link",
                                     role, path, ec ? std::string() : fmt::format(" to '{}'", to.string())));
      }
    }
    if (S_ISCHR(st.st_mode) || S_ISFIFO(st.st_mode)) {
      if (!rules.streams) {
        throw InputError(fmt::format("{} '{}'{} is {}; this output is written as a file (under a temporary name, "
                                     "then renamed) and never replaces or goes through special files: give a regular "
                                     "file path",
                                     role, path, through_link, file_kind(st.st_mode)));
      }
      return OutputKind::Stream;
    }
    if (!S_ISREG(st.st_mode)) {
      throw InputError(fmt::format("{} '{}'{} is {}; Nimbus writes outputs to regular files, character devices and "
                                   "FIFOs only: give a regular file path",
                                   role, path, through_link, file_kind(st.st_mode)));
    }
    if (!rules.overwrite) {
      throw InputError(fmt::format("{} '{}' already exists; pass @[overwrite] to replace it, or choose another path",
                                   role, path));
    }
  }
  const std::string name = target.filename().string();
  if (name.empty() || name == "." || name == "..") {
    throw InputError(fmt::format("{} '{}' names a directory; give a file path such as {}/mask.tif", role, path,
                                 target.parent_path().string()));
  }
  const fs::path dir = directory_of(path);
  if (!fs::is_directory(dir)) {
    throw InputError(fmt::format("{} '{}': directory '{}' does not exist; create it first", role, path,
                                 dir.string()));
  }
  if (::access(dir.c_str(), W_OK) != 0) {
    throw InputError(fmt::format("{} '{}': directory '{}' is not writable ({}); choose another output location",
                                 role, path, dir.string(), std::strerror(errno)));
  }
  long name_max = ::pathconf(dir.c_str(), _PC_NAME_MAX);
  if (name_max <= 0) name_max = NAME_MAX;
  if (name.size() > static_cast<std::size_t>(name_max)) {
    throw InputError(fmt::format("{} '{}': the file name is {} bytes, the file system allows {}; use a shorter name",
                                 role, path, name.size(), name_max));
  }
  return exists ? OutputKind::ExistingFile : OutputKind::NewFile;
}

std::string partial_name_prefix(const std::string& file_name) {
  std::size_t n = std::min(file_name.size(), kPartialNameBytes);
  // Never cut a UTF-8 sequence: back up to the start of the character.
  while (n > 0 && n < file_name.size() && (static_cast<unsigned char>(file_name[n]) & 0xC0) == 0x80) --n;
  return "." + file_name.substr(0, n) + ".nimbus-partial-";
}

AtomicOutput::AtomicOutput(std::string final_path, std::string role, const OutputRules& rules)
    : final_path_(std::move(final_path)), role_(std::move(role)) {
  kind_ = check_output_path(final_path_, role_, rules);
  if (kind_ == OutputKind::Stream) return;
  temp_path_ = unique_hidden_name(directory_of(final_path_),
                                  partial_name_prefix(fs::path(final_path_).filename().string()));
  interrupt_slots_.push_back(register_temporary(temp_path_));
  for (const char* suffix : kGdalTemporarySuffixes) interrupt_slots_.push_back(register_temporary(temp_path_ + suffix));
}

const std::string& AtomicOutput::temp_path() const {
  if (kind_ == OutputKind::Stream) {
    throw InternalError(fmt::format("{} '{}' is a stream and has no temporary file", role_, final_path_));
  }
  return temp_path_;
}

void AtomicOutput::write_bytes(const std::string& bytes) {
  if (kind_ == OutputKind::Stream) {
    stream_bytes_ = bytes;
    return;
  }
  try {
    write_whole_file(temp_path_, role_, bytes);
  } catch (const InputError&) {
    throw InputError(fmt::format("{} '{}' could not be written; check disk space and permissions", role_,
                                 final_path_));
  }
}

bool AtomicOutput::move_into_place() const {
  return (kind_ == OutputKind::NewFile ? rename_no_replace(temp_path_.c_str(), final_path_.c_str())
                                       : std::rename(temp_path_.c_str(), final_path_.c_str())) == 0;
}

int AtomicOutput::open_stream() const {
  if (const int fd = stream_descriptor(final_path_); fd >= 0) return fd;
  // Non-blocking open: a FIFO nobody reads fails at once (ENXIO) instead of hanging.
  const int fd = ::open(final_path_.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) {
    const int err = errno;
    throw InputError(fmt::format("{} '{}' could not be opened for writing ({}){}", role_, final_path_,
                                 std::strerror(err),
                                 err == ENXIO ? "; it is a FIFO nobody reads: start the reader first" : ""));
  }
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  return fd;
}

void AtomicOutput::write_stream(int fd) const {
  if (fd == STDOUT_FILENO) std::fflush(stdout);
  if (fd == STDERR_FILENO) std::fflush(stderr);
  std::size_t done = 0;
  while (done < stream_bytes_.size()) {
    const ssize_t n = ::write(fd, stream_bytes_.data() + done, stream_bytes_.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      throw InputError(fmt::format("{} '{}': writing failed after {} of {} bytes ({})", role_, final_path_, done,
                                   stream_bytes_.size(), std::strerror(errno)));
    }
    done += static_cast<std::size_t>(n);
  }
}

std::string AtomicOutput::in_terms_of_final_path(std::string message) const {
  for (std::size_t at = message.find(temp_path_); at != std::string::npos;
       at = message.find(temp_path_, at + final_path_.size())) {
    message.replace(at, temp_path_.size(), final_path_);
  }
  return message;
}

void AtomicOutput::remove_temporaries() {
  if (temp_path_.empty()) return;  // a stream
  std::remove(temp_path_.c_str());
  for (const char* suffix : kGdalTemporarySuffixes) std::remove((temp_path_ + suffix).c_str());
}

void AtomicOutput::release_slots() {
  for (int slot : interrupt_slots_) unregister_temporary(slot);
  interrupt_slots_.clear();
}

AtomicOutput::~AtomicOutput() {
  if (!committed_) remove_temporaries();
  release_slots();
}

void AtomicOutput::commit() {
  if (kind_ == OutputKind::Stream) {
    const int fd = open_stream();
    const bool owned = stream_descriptor(final_path_) < 0;
    try {
      write_stream(fd);
    } catch (...) {
      if (owned) ::close(fd);
      throw;
    }
    if (owned) ::close(fd);
    committed_ = true;
    return;
  }
  if (!move_into_place()) {
    const int err = errno;
    remove_temporaries();
    release_slots();
    throw InputError(fmt::format("{} '{}': could not move the finished file into place ({}){}", role_, final_path_,
                                 std::strerror(err),
                                 err == EEXIST ? "; the file appeared while Nimbus ran: pass @[overwrite] to replace "
                                                 "it, or choose another path"
                                               : "; check permissions"));
  }
  committed_ = true;
  release_slots();
}

InputFiles::InputFiles(const std::vector<RunInput>& inputs) {
  for (const RunInput& in : inputs) {
    if (in.path.empty() || in.path.rfind("/vsi", 0) == 0) continue;
    struct stat st {};
    if (::stat(in.path.c_str(), &st) != 0) continue;  // a missing input is reported as such elsewhere
    by_identity_.emplace(std::make_pair(static_cast<std::uint64_t>(st.st_dev), static_cast<std::uint64_t>(st.st_ino)),
                         in);
    by_path_.emplace(resolved(in.path).string(), in);
    if (S_ISDIR(st.st_mode)) directories_.emplace(resolved(in.path).string(), in);
  }
}

void InputFiles::check_not_an_input(const std::string& path, const std::string& role) const {
  if (by_path_.empty()) return;
  const fs::path out = resolved(path);
  const RunInput* same = nullptr;
  bool through_link = false;
  if (const auto it = by_path_.find(out.string()); it != by_path_.end()) same = &it->second;
  struct stat st {};
  if (!same && ::stat(path.c_str(), &st) == 0) {
    const auto it = by_identity_.find({static_cast<std::uint64_t>(st.st_dev), static_cast<std::uint64_t>(st.st_ino)});
    if (it != by_identity_.end()) {
      same = &it->second;
      through_link = true;
    }
  }
  if (same) {
    throw InputError(fmt::format("{} '{}' is the input {} '{}'{}; writing it would replace the input: choose "
                                 "another output path",
                                 role, path, same->role, same->path,
                                 through_link ? " (the same file through a link)" : ""));
  }
  for (fs::path dir = out.parent_path(); !dir.empty(); dir = dir.parent_path()) {
    if (const auto it = directories_.find(dir.string()); it != directories_.end()) {
      throw InputError(fmt::format("{} '{}' lies inside the input {} '{}'; inputs are never modified: write outputs "
                                   "outside it",
                                   role, path, it->second.role, it->second.path));
    }
    if (dir == dir.parent_path()) break;
  }
}

void check_not_an_input(const std::string& path, const std::string& role, const std::vector<RunInput>& inputs) {
  InputFiles(inputs).check_not_an_input(path, role);
}

OutputSet::OutputSet(std::vector<RunInput> inputs, const OutputRules& rules) : inputs_(inputs), rules_(rules) {}

OutputSet::~OutputSet() {
  files_.clear();  // removes the temporary files first
  if (committed_) return;
  // Innermost first; fs::remove refuses non-empty directories, so nothing of anyone else goes.
  for (auto it = created_directories_.rbegin(); it != created_directories_.rend(); ++it) {
    std::error_code ec;
    fs::remove(*it, ec);
  }
}

void OutputSet::check_not_taken(const std::string& path, const std::string& role) const {
  // Streams named by descriptor ('-', /dev/stdout) are the same when their descriptor is.
  const auto key = [](const std::string& p) {
    const int fd = stream_descriptor(p);
    return fd >= 0 ? fs::path(fmt::format("/proc/self/fd/{}", fd)) : resolved(p);
  };
  const fs::path p = key(path);
  for (const auto& f : files_) {
    if (key(f->final_path()) == p) {
      throw InputError(fmt::format("{} '{}' and {} '{}' are the same file; one would silently replace the other: "
                                   "give them different paths",
                                   role, path, f->role(), f->final_path()));
    }
  }
  for (const auto& [dir, dir_role] : directories_) {
    if (fs::path(dir) == p) {
      throw InputError(fmt::format("{} '{}' is also the directory of {}; give the file and the directory different "
                                   "paths",
                                   role, path, dir_role));
    }
  }
}

AtomicOutput& OutputSet::add_file(const std::string& path, const std::string& role) { return add(path, role, false); }

AtomicOutput& OutputSet::add_file_or_stream(const std::string& path, const std::string& role) {
  return add(path, role, true);
}

AtomicOutput& OutputSet::add(const std::string& path, const std::string& role, bool streams) {
  OutputRules rules = rules_;
  rules.streams = streams;
  if (path.find('\0') == std::string::npos && stream_descriptor(path) < 0) inputs_.check_not_an_input(path, role);
  check_output_path(path, role, rules);
  check_not_taken(path, role);
  files_.push_back(std::make_unique<AtomicOutput>(path, role, rules));
  return *files_.back();
}

void OutputSet::add_directory(const std::string& dir, const std::string& role) {
  if (dir.empty()) throw InputError(fmt::format("{} is empty; give a directory", role));
  if (dir == "-" || dir.rfind("/vsi", 0) == 0 || dir.find('\0') != std::string::npos) {
    throw InputError(fmt::format("{} '{}' is not a directory path on disk; give a directory", role, dir));
  }
  const fs::path p = resolved(dir);
  for (const auto& f : files_) {
    if (resolved(f->final_path()) == p) {
      throw InputError(fmt::format("{} '{}' is also the file of {}; give the directory and the file different paths",
                                   role, dir, f->role()));
    }
  }
  inputs_.check_not_an_input(dir, role);
  std::error_code ec;
  if (fs::exists(fs::symlink_status(dir, ec)) && !fs::is_directory(dir, ec)) {
    throw InputError(fmt::format("{} '{}' exists and is not a directory; give a directory", role, dir));
  }
  // Remember which directories this set creates, outermost first.
  std::vector<std::string> missing;
  for (fs::path q = fs::absolute(dir, ec).lexically_normal(); !q.empty() && !fs::exists(q, ec);
       q = q.parent_path()) {
    if (q.filename().empty()) continue;
    missing.insert(missing.begin(), q.string());
    if (q == q.parent_path()) break;
  }
  ensure_directory(dir, role);
  created_directories_.insert(created_directories_.end(), missing.begin(), missing.end());
  directories_.emplace_back(p.string(), role);
}

void OutputSet::commit() {
  // Streams first opened (a FIFO nobody reads fails here, before any file moves),
  // written only once every file is in place.
  std::vector<std::pair<AtomicOutput*, int>> streams;
  const auto close_streams = [&] {
    for (const auto& [out, fd] : streams) {
      if (stream_descriptor(out->final_path()) < 0) ::close(fd);
    }
  };
  try {
    for (auto& f : files_) {
      if (f->is_stream()) streams.emplace_back(f.get(), f->open_stream());
    }
  } catch (...) {
    close_streams();
    throw;
  }
  // Keep (hard links to) the files about to be replaced, so a failed commit can put them back.
  std::vector<std::string> backups(files_.size());
  std::vector<int> backup_slots;
  for (std::size_t i = 0; i < files_.size(); ++i) {
    if (files_[i]->is_stream()) continue;
    struct stat st {};
    const std::string& final_path = files_[i]->final_path();
    if (::lstat(final_path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    const std::string backup = unique_hidden_name(directory_of(final_path), ".nimbus-backup-");
    if (::link(final_path.c_str(), backup.c_str()) == 0) {
      backups[i] = backup;
      backup_slots.push_back(register_temporary(backup));
    }
  }
  const auto drop_backups = [&] {
    for (const std::string& b : backups) {
      if (!b.empty()) std::remove(b.c_str());
    }
    for (int slot : backup_slots) unregister_temporary(slot);
  };
  for (std::size_t i = 0; i < files_.size(); ++i) {
    AtomicOutput& f = *files_[i];
    if (f.is_stream()) continue;
    if (f.move_into_place()) {
      f.committed_ = true;
      continue;
    }
    const int err = errno;
    for (std::size_t j = i; j-- > 0;) {  // roll back what is already in place
      AtomicOutput& done = *files_[j];
      if (done.is_stream()) continue;
      if (!backups[j].empty()) {
        std::rename(backups[j].c_str(), done.final_path().c_str());
        backups[j].clear();
      } else {
        std::remove(done.final_path().c_str());
      }
      done.committed_ = false;
    }
    drop_backups();
    close_streams();
    throw InputError(fmt::format("{} '{}': could not move the finished file into place ({}); no output of this run "
                                 "was kept: {}",
                                 f.role(), f.final_path(), std::strerror(err),
                                 err == EEXIST ? "the file appeared while Nimbus ran; pass @[overwrite] to replace it"
                                               : "check permissions and that the path is not a directory"));
  }
  drop_backups();
  for (auto& f : files_) f->release_slots();
  committed_ = true;
  // The files are published; a stream that fails now is reported, the files stay.
  try {
    for (const auto& [out, fd] : streams) {
      out->write_stream(fd);
      out->committed_ = true;
    }
  } catch (...) {
    close_streams();
    throw;
  }
  close_streams();
}

void write_whole_file(const std::string& path, const std::string& role, const std::string& bytes) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  bool ok = f && std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size();
  if (f) ok = (std::fclose(f) == 0) && ok;
  if (!ok) {
    throw InputError(fmt::format("{} '{}' could not be written; check disk space and permissions", role, path));
  }
}

void write_file_atomically(const std::string& path, const std::string& role, const std::string& bytes) {
  AtomicOutput out(path, role, OutputRules{/*overwrite=*/true, /*streams=*/false});
  out.write_bytes(bytes);
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
