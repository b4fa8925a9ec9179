// GET /v0/system-metrics: the host's load, CPU, memory and the data volume's free space.
#pragma once

#include <string>

#include "nimbus/server/run_record.h"

namespace nimbus::server {

// load_avg, cpu_usage (percent since the previous call), free_mem, used_mem,
// total_mem (bytes, from /proc/meminfo) and disk_free (bytes free for this user on
// the volume of `data_dir`, null when unknown).
OJson system_metrics(const std::string& data_dir);

// This process's peak resident set size in bytes (VmHWM), 0 when unknown.
long long peak_rss_bytes();

}  // namespace nimbus::server
