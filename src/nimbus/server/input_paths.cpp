#include "nimbus/server/input_paths.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <httplib.h>

namespace nimbus::server {
namespace fs = std::filesystem;
namespace {

bool starts_with(const std::string& s, const char* prefix) { return s.rfind(prefix, 0) == 0; }

std::string percent_decode(const std::string& s, const std::string& field) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%') {
      if (i + 2 >= s.size() || !std::isxdigit(static_cast<unsigned char>(s[i + 1])) ||
          !std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
        throw InputError(fmt::format("{}: bad percent-encoding in '{}'", field, s));
      }
      out += static_cast<char>(std::stoi(s.substr(i + 1, 2), nullptr, 16));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

// Whether `path` lies inside `root` (both canonical), component by component.
bool inside(const fs::path& path, const fs::path& root) {
  auto p = path.begin();
  for (auto r = root.begin(); r != root.end(); ++r, ++p) {
    if (r->empty()) continue;  // a trailing separator
    if (p == path.end() || *p != *r) return false;
  }
  return true;
}

}  // namespace

std::string require_under_input_root(const std::string& path, const std::vector<std::string>& input_roots,
                                     const std::string& field) {
  if (path.find('\0') != std::string::npos) throw InputError(fmt::format("{}: the path contains a NUL byte", field));
  if (!fs::path(path).is_absolute()) {
    throw InputError(fmt::format("{}: '{}' is not an absolute path; give the file's absolute path", field, path));
  }
  if (input_roots.empty()) {
    throw InputError(fmt::format("{}: '{}': this server reads no local files (it was started without --input-root)",
                                 field, path));
  }
  std::error_code ec;
  const fs::path canonical = fs::canonical(path, ec);
  bool allowed = false;
  if (!ec) {
    for (const std::string& root : input_roots) {
      std::error_code rec;
      const fs::path r = fs::canonical(root, rec);
      if (!rec && inside(canonical, r)) allowed = true;
    }
  }
  // The same answer for a missing file outside the roots as for an existing one:
  // a client learns nothing about files it may not read.
  if (!allowed) {
    if (ec) {
      bool under_root_lexically = false;
      for (const std::string& root : input_roots) {
        if (inside(fs::path(path).lexically_normal(), fs::path(root).lexically_normal())) under_root_lexically = true;
      }
      if (under_root_lexically) throw InputError(fmt::format("{}: '{}' does not exist; check the path", field, path));
    }
    throw InputError(fmt::format("{}: '{}' is outside the server's input roots; place inputs under {}", field, path,
                                 fmt::format("'{}'", fmt::join(input_roots, "', '"))));
  }
  if (!fs::is_regular_file(canonical)) {
    throw InputError(fmt::format("{}: '{}' is not a regular file; give a raster file", field, path));
  }
  return canonical.string();
}

ResolvedHref resolve_asset_href(const std::string& href, const std::vector<std::string>& input_roots,
                                bool allow_remote, const std::string& field) {
  if (href.empty()) throw InputError(fmt::format("{}: empty href; give the asset's absolute path or URL", field));
  if (starts_with(href, "http://") || starts_with(href, "https://")) {
    if (!allow_remote) {
      throw InputError(fmt::format("{}: '{}': this server does not fetch remote assets (--no-remote-assets)", field,
                                   href));
    }
    const auto host_start = href.find("://") + 3;
    if (host_start >= href.size() || href[host_start] == '/') {
      throw InputError(fmt::format("{}: '{}' has no host", field, href));
    }
    for (const char c : href) {
      if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) {
        throw InputError(fmt::format("{}: the URL contains spaces or control characters; percent-encode them", field));
      }
    }
    return {href, true};
  }
  std::string path = href;
  if (starts_with(href, "file://")) {
    std::string rest = href.substr(7);
    if (starts_with(rest, "localhost/")) rest = rest.substr(9);
    if (!starts_with(rest, "/")) {
      throw InputError(fmt::format("{}: '{}' names a remote host; file:// URIs must be local (file:///path)", field,
                                   href));
    }
    path = percent_decode(rest, field);
  } else if (href.find("://") != std::string::npos) {
    throw InputError(fmt::format("{}: '{}': unsupported URL scheme; use an absolute path, file:// or http(s)://",
                                 field, href));
  }
  return {require_under_input_root(path, input_roots, field), false};
}

void download_asset(const std::string& url, const std::string& destination, const std::string& field,
                    const CancelCheck& cancel) {
  const auto scheme_end = url.find("://");
  const auto path_start = url.find('/', scheme_end + 3);
  const std::string origin = url.substr(0, path_start);
  const std::string target = path_start == std::string::npos ? "/" : url.substr(path_start);
  httplib::Client client(origin);
  client.set_follow_location(true);
  client.set_connection_timeout(30);
  client.set_read_timeout(120);
  const std::string partial = destination + ".download";
  std::ofstream out(partial, std::ios::binary);
  if (!out) throw InputError(fmt::format("{}: cannot write '{}'; check the data directory", field, partial));
  // The GET runs on its own thread so that a cancellation is seen while the remote
  // server has not answered yet: stop() closes the connection.
  std::atomic<int> status{0};
  std::atomic<bool> finished{false};
  httplib::Error error = httplib::Error::Success;
  std::thread get([&] {
    const auto result = client.Get(
        target,
        [&](const httplib::Response& r) {
          status = r.status;
          return r.status == 200;
        },
        [&](const char* data, std::size_t n) {
          out.write(data, static_cast<std::streamsize>(n));
          return static_cast<bool>(out);
        });
    if (!result) error = result.error();
    finished = true;
  });
  bool cancelled = false;
  while (!finished) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    if (!cancelled && cancel && cancel()) {
      cancelled = true;
      client.stop();
    }
  }
  get.join();
  out.close();
  if (cancelled || status != 200 || error != httplib::Error::Success || !out) std::remove(partial.c_str());
  if (cancelled) throw Cancelled();
  if (status != 200 && status != 0) throw InputError(fmt::format("{}: GET '{}' answered HTTP {}", field, url, status.load()));
  if (error != httplib::Error::Success || status == 0) {
    throw InputError(fmt::format("{}: GET '{}' failed ({})", field, url, httplib::to_string(error)));
  }
  if (!out) throw InputError(fmt::format("{}: cannot write '{}'; check disk space", field, partial));
  std::error_code ec;
  fs::rename(partial, destination, ec);
  if (ec) throw InputError(fmt::format("{}: cannot store the download: {}", field, ec.message()));
}

}  // namespace nimbus::server
