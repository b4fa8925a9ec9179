#include "nimbus/server/system_metrics.h"

#include <sys/statvfs.h>

#include <cstdlib>
#include <fstream>
#include <mutex>
#include <sstream>

namespace nimbus::server {
namespace {

long long meminfo_kib(const std::string& text, const std::string& key) {
  const auto at = text.find(key + ":");
  if (at == std::string::npos) return 0;
  return std::atoll(text.c_str() + at + key.size() + 1);
}

std::string read_file(const char* path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

OJson system_metrics(const std::string& data_dir) {
  OJson m = OJson::object();
  double load[3] = {0, 0, 0};
  if (getloadavg(load, 3) != 3) load[0] = load[1] = load[2] = 0;
  m["load_avg"] = OJson::array({load[0], load[1], load[2]});

  // CPU use since the previous call (since boot for the first one).
  static std::mutex mu;
  static unsigned long long last_busy = 0, last_total = 0;
  double cpu = 0.0;
  {
    std::istringstream stat(read_file("/proc/stat"));
    std::string cpu_label;
    unsigned long long v[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    stat >> cpu_label >> v[0] >> v[1] >> v[2] >> v[3] >> v[4] >> v[5] >> v[6] >> v[7];
    unsigned long long total = 0;
    for (unsigned long long x : v) total += x;
    const unsigned long long busy = total - v[3] - v[4];  // minus idle and iowait
    std::lock_guard<std::mutex> lock(mu);
    if (total > last_total) cpu = 100.0 * static_cast<double>(busy - last_busy) / static_cast<double>(total - last_total);
    last_busy = busy;
    last_total = total;
  }
  m["cpu_usage"] = cpu;
  const std::string meminfo = read_file("/proc/meminfo");
  const long long total = meminfo_kib(meminfo, "MemTotal") * 1024;
  const long long available = meminfo_kib(meminfo, "MemAvailable") * 1024;
  m["free_mem"] = meminfo_kib(meminfo, "MemFree") * 1024;
  m["used_mem"] = total - available;
  m["total_mem"] = total;
  struct statvfs fs {};
  if (statvfs(data_dir.c_str(), &fs) == 0) {
    m["disk_free"] = static_cast<long long>(fs.f_bavail) * static_cast<long long>(fs.f_frsize);
  } else {
    m["disk_free"] = nullptr;
  }
  return m;
}

long long peak_rss_bytes() {
  const std::string status = read_file("/proc/self/status");
  return meminfo_kib(status, "VmHWM") * 1024;
}

}  // namespace nimbus::server
