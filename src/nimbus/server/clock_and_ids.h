// Timestamps and ids as FarmVibes' REST API writes them.
#pragma once

#include <string>

namespace nimbus::server {

// Naive UTC ISO 8601 as Python's isoformat(): "2025-11-25T10:00:01.200000"
// (microseconds only when non-zero), the form the client expects (spec 4.4).
std::string utc_timestamp_now();

// RFC 7231 IMF-fixdate for the Date header: "Tue, 25 Nov 2025 10:00:00 GMT".
std::string http_date_now();

// A random UUID4, lower-case with dashes.
std::string new_uuid4();

// Whether `text` is a UUID (32 hex digits, with or without the four dashes); `canonical`
// receives the lower-case dashed form.
bool parse_uuid(const std::string& text, std::string& canonical);

}  // namespace nimbus::server
