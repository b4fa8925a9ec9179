#include "nimbus/server/page.h"

#include <fmt/format.h>

#include "nimbus/version.h"

namespace nimbus::server {
namespace {

std::string escape(const std::string& s) {
  std::string out;
  for (const char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string text(const OJson& v) {
  if (v.is_null()) return "";
  if (v.is_string()) return v.get<std::string>();
  return v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string time_cell(const OJson& details, const char* key) {
  const std::string t = text(details[key]);
  return t.empty() ? "&ndash;" : escape(t.substr(0, 19)) + "Z";
}

}  // namespace

std::string runs_page(const std::vector<RunRecord>& runs, const std::vector<std::vector<std::string>>& quicklooks) {
  bool unfinished = false;
  std::string rows;
  for (std::size_t i = runs.size(); i-- > 0;) {  // newest first
    const RunRecord& r = runs[i];
    const std::string st = r.status();
    unfinished |= !is_finished(st) && st != status::kDeleted;
    std::string images;
    for (const std::string& url : quicklooks[i]) {
      images += fmt::format("<a href=\"{0}\"><img src=\"{0}\" alt=\"mask quicklook\"></a>", escape(url));
    }
    const std::string reason = text(r.details["reason"]);
    rows += fmt::format(
        "<tr id=\"run-{id}\" class=\"{st}\"><td><code title=\"{id}\">{short_id}</code></td><td>{name}</td>"
        "<td>{workflow}</td><td class=\"status\">{st}</td><td>{sub}</td><td>{start}</td><td>{end}</td>"
        "<td><code>{params}</code></td><td>{reason}</td><td>{images}</td></tr>\n",
        fmt::arg("id", escape(r.id)), fmt::arg("short_id", escape(r.id.substr(0, 8))),
        fmt::arg("name", escape(text(r.name))), fmt::arg("workflow", escape(text(r.workflow))), fmt::arg("st", st),
        fmt::arg("sub", time_cell(r.details, "submission_time")), fmt::arg("start", time_cell(r.details, "start_time")),
        fmt::arg("end", time_cell(r.details, "end_time")), fmt::arg("params", escape(text(r.parameters))),
        fmt::arg("reason", escape(reason)), fmt::arg("images", images));
  }
  if (rows.empty()) rows = "<tr><td colspan=\"10\">No runs yet: submit one with POST /v0/runs.</td></tr>\n";
  return fmt::format(R"(<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">{refresh}
<title>Nimbus runs</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; color: #222; }}
table {{ border-collapse: collapse; width: 100%; }}
th, td {{ border-bottom: 1px solid #ddd; padding: 0.35em 0.5em; text-align: left; vertical-align: top; font-size: 0.9em; }}
th {{ background: #f3f3f3; }}
td.status {{ font-weight: bold; }}
tr.done td.status {{ color: #1a7f37; }} tr.failed td.status {{ color: #b42318; }}
tr.running td.status, tr.queued td.status {{ color: #9a6700; }} tr.cancelled td.status, tr.deleted td.status {{ color: #777; }}
img {{ max-width: 160px; max-height: 160px; border: 1px solid #ccc; }}
</style></head><body>
<h1>Nimbus runs</h1>
<p>nimbus {version} &middot; FarmVibes-compatible REST API under <code>/v0</code> &middot; times in UTC{note}</p>
<table><thead><tr><th>id</th><th>name</th><th>workflow</th><th>status</th><th>submitted</th><th>started</th><th>ended</th><th>parameters</th><th>reason</th><th>mask</th></tr></thead>
<tbody>
{rows}</tbody></table>
</body></html>
)",
                     fmt::arg("refresh", unfinished ? "<meta http-equiv=\"refresh\" content=\"2\">" : ""),
                     fmt::arg("version", kVersion),
                     fmt::arg("note", unfinished ? " &middot; refreshing every 2 s while runs are unfinished" : ""),
                     fmt::arg("rows", rows));
}

}  // namespace nimbus::server
