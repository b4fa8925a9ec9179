// Where a request may point the server: asset hrefs and model files must resolve
// (symbolic links followed) to regular files under a configured input root; remote
// assets are plain http(s) URLs. Nothing from a request is used as a path unchecked.
#pragma once

#include <string>
#include <vector>

#include "nimbus/core/error.h"

namespace nimbus::server {

// An asset href resolved: a canonical local path, or an http(s) URL.
struct ResolvedHref {
  std::string location;
  bool remote = false;
};

// Accepts an absolute path, a file:// URI (file:///abs or file://localhost/abs,
// percent-encoded) or an http(s) URL. Throws InputError naming `field` otherwise, or
// when the file is missing, not a regular file or outside every input root.
ResolvedHref resolve_asset_href(const std::string& href, const std::vector<std::string>& input_roots,
                                bool allow_remote, const std::string& field);

// A local file under an input root: its canonical path. Throws InputError naming `field`.
std::string require_under_input_root(const std::string& path, const std::vector<std::string>& input_roots,
                                     const std::string& field);

// Downloads `url` into `destination` (written whole, then renamed into place). Throws
// InputError with the HTTP status or connection error. `cancel` is polled between chunks.
void download_asset(const std::string& url, const std::string& destination, const std::string& field,
                    const CancelCheck& cancel);

}  // namespace nimbus::server
