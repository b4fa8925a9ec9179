#include "nimbus/core/checksum.h"

#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <vector>

#include <openssl/evp.h>

#include <fmt/format.h>

#include "nimbus/core/error.h"

namespace nimbus {
namespace {

std::string to_hex(const unsigned char* digest, unsigned int len) {
  std::string hex;
  hex.reserve(len * 2);
  for (unsigned int i = 0; i < len; ++i) hex += fmt::format("{:02x}", digest[i]);
  return hex;
}

}  // namespace

std::string sha256_hex(const std::string& bytes) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(bytes.data(), bytes.size(), digest, &len, EVP_sha256(), nullptr) != 1) {
    throw InternalError("OpenSSL SHA-256 failed");
  }
  return to_hex(digest, len);
}

std::optional<std::string> file_stat_identity(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return std::nullopt;
  std::error_code ec;
  return fmt::format("{}|{}|{}.{}", std::filesystem::absolute(path, ec).string(), static_cast<long long>(st.st_size),
                     static_cast<long long>(st.st_mtim.tv_sec), static_cast<long long>(st.st_mtim.tv_nsec));
}

std::string sha256_file(const std::string& path, const std::string& role) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(fmt::format("{} '{}' cannot be read; check the path and permissions", role, path));
  const std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1) throw InternalError("OpenSSL SHA-256 failed");
  std::vector<char> block(std::size_t{1} << 20);
  while (in) {
    in.read(block.data(), static_cast<std::streamsize>(block.size()));
    if (in.gcount() > 0 && EVP_DigestUpdate(ctx.get(), block.data(), static_cast<std::size_t>(in.gcount())) != 1) {
      throw InternalError("OpenSSL SHA-256 failed");
    }
  }
  if (!in.eof()) throw InputError(fmt::format("{} '{}': reading failed part-way; check the disk", role, path));
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_DigestFinal_ex(ctx.get(), digest, &len) != 1) throw InternalError("OpenSSL SHA-256 failed");
  return to_hex(digest, len);
}

}  // namespace nimbus
