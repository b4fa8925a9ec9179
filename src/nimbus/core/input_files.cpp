#include "nimbus/core/input_files.h"

#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include <fmt/format.h>

#include "nimbus/core/error.h"

namespace nimbus {

void require_not_special_file(const std::string& path, const std::string& role) {
  if (path.rfind("/vsi", 0) == 0) return;
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return;
  const char* kind = S_ISFIFO(st.st_mode)   ? "a FIFO (named pipe)"
                     : S_ISSOCK(st.st_mode) ? "a socket"
                     : S_ISCHR(st.st_mode)  ? "a character device"
                     : S_ISBLK(st.st_mode)  ? "a block device"
                                            : nullptr;
  if (kind) {
    throw InputError(fmt::format("{} '{}' is {}, not a regular file: Nimbus reads files it can seek and size; save "
                                 "the data to a file first and pass that",
                                 role, path, kind));
  }
}

void require_not_an_input(const std::string& output, const std::string& output_role,
                          const std::vector<std::pair<std::string, std::string>>& inputs) {
  if (output.empty()) return;
  for (const auto& [path, role] : inputs) {
    if (path.empty() || path.rfind("/vsi", 0) == 0) continue;
    std::error_code ec;
    if (std::filesystem::equivalent(output, path, ec) && !ec) {
      throw InputError(fmt::format("{} '{}' is the same file as the {} '{}': writing it would replace that input; "
                                   "choose another output path",
                                   output_role, output, role, path));
    }
  }
}

std::uint64_t usable_memory_bytes() {
  const long pages = ::sysconf(_SC_PHYS_PAGES);
  const long page_size = ::sysconf(_SC_PAGE_SIZE);
  std::uint64_t limit = pages > 0 && page_size > 0 ? static_cast<std::uint64_t>(pages) * static_cast<std::uint64_t>(page_size)
                                                   : UINT64_MAX;
  struct rlimit rl {};
  if (::getrlimit(RLIMIT_AS, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
    limit = std::min<std::uint64_t>(limit, rl.rlim_cur);
  }
  std::ifstream cgroup("/sys/fs/cgroup/memory.max");
  std::uint64_t cgroup_max = 0;
  if (cgroup >> cgroup_max && cgroup_max > 0) limit = std::min(limit, cgroup_max);
  return limit;
}

void require_memory(std::uint64_t bytes, const std::string& what) {
  const std::uint64_t usable = usable_memory_bytes();
  if (bytes <= usable) return;
  const auto gib = [](std::uint64_t b) { return static_cast<double>(b) / (1024.0 * 1024.0 * 1024.0); };
  throw InputError(fmt::format("{} needs about {:.1f} GiB of memory, more than the {:.1f} GiB available; check the "
                               "raster's declared size (gdalinfo), or split it into tiles (gdal_translate -srcwin)",
                               what, gib(bytes), gib(usable)));
}

}  // namespace nimbus
