// SHA-256 digests (OpenSSL), lower-case hex.
#pragma once

#include <string>

namespace nimbus {

std::string sha256_hex(const std::string& bytes);

// Digest of a file's contents, streamed in blocks. Throws InputError naming `role`
// when the file cannot be read.
std::string sha256_file(const std::string& path, const std::string& role);

}  // namespace nimbus
