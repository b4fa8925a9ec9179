// SHA-256 digests (OpenSSL), lower-case hex.
#pragma once

#include <optional>
#include <string>

namespace nimbus {

std::string sha256_hex(const std::string& bytes);

// Digest of a file's contents, streamed in blocks. Throws InputError naming `role`
// when the file cannot be read.
std::string sha256_file(const std::string& path, const std::string& role);

// What identifies a file's current version without reading it: its absolute path,
// size and modification time as text; std::nullopt when it does not exist.
std::optional<std::string> file_stat_identity(const std::string& path);

}  // namespace nimbus
