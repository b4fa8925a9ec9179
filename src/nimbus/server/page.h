// GET /: a page for people listing the runs (state, times, parameters, reason) with
// the quicklook of finished masks; it reloads itself while runs are unfinished.
#pragma once

#include <string>
#include <vector>

#include "nimbus/server/run_record.h"

namespace nimbus::server {

// `quicklooks[i]` lists the quicklook URLs of runs[i] (empty when it has none).
std::string runs_page(const std::vector<RunRecord>& runs, const std::vector<std::vector<std::string>>& quicklooks);

}  // namespace nimbus::server
