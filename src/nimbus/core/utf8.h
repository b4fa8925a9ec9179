// UTF-8 validation for text that ends up in JSON (workflow YAML, --param values):
// nlohmann::json refuses to serialise invalid UTF-8, so it is rejected at the door.
#pragma once

#include <cstddef>
#include <string_view>

namespace nimbus {

// Byte offset of the first byte that does not start a well-formed UTF-8 sequence
// (overlong forms, surrogates and code points above U+10FFFF count as invalid), or
// std::string_view::npos when the whole text is valid.
std::size_t invalid_utf8_offset(std::string_view text);

}  // namespace nimbus
