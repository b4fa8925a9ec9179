#include "nimbus/core/npy.h"

#include <cstring>
#include <fstream>
#include <functional>
#include <numeric>
#include <regex>
#include <sstream>

#include <fmt/format.h>

#include "nimbus/core/error.h"
#include "nimbus/raster/atomic_output.h"

namespace nimbus {

NpyArray read_npy(const std::string& path, const std::string& role) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(fmt::format("{} '{}' cannot be read; check the path", role, path));
  std::ostringstream buffer;
  buffer << in.rdbuf();
  const std::string bytes = buffer.str();
  const auto bad = [&](const std::string& why) {
    return InputError(fmt::format("{} '{}' is not a float32 .npy array ({}); save it with "
                                  "numpy.save(path, array.astype('float32'))",
                                  role, path, why));
  };
  if (bytes.size() < 10 || bytes.compare(0, 6, "\x93NUMPY") != 0) throw bad("no NumPy header");
  const int major = static_cast<unsigned char>(bytes[6]);
  std::size_t header_len = 0, offset = 0;
  if (major == 1) {
    header_len = static_cast<unsigned char>(bytes[8]) | (static_cast<std::size_t>(static_cast<unsigned char>(bytes[9])) << 8);
    offset = 10;
  } else if (major == 2 || major == 3) {
    if (bytes.size() < 12) throw bad("truncated header");
    std::uint32_t len = 0;
    std::memcpy(&len, bytes.data() + 8, 4);
    header_len = len;
    offset = 12;
  } else {
    throw bad(fmt::format("format version {}", major));
  }
  if (bytes.size() < offset + header_len) throw bad("truncated header");
  const std::string header = bytes.substr(offset, header_len);
  std::smatch m;
  if (!std::regex_search(header, m, std::regex(R"('descr':\s*'([^']*)')"))) throw bad("no dtype");
  const std::string descr = m[1];
  if (descr != "<f4" && descr != "<f8") throw bad(fmt::format("dtype {}", descr));
  if (std::regex_search(header, std::regex(R"('fortran_order':\s*True)"))) throw bad("Fortran order");
  if (!std::regex_search(header, m, std::regex(R"('shape':\s*\(([^)]*)\))"))) throw bad("no shape");
  NpyArray a;
  const std::string dims = m[1];
  const std::regex number(R"(\d+)");
  for (auto it = std::sregex_iterator(dims.begin(), dims.end(), number); it != std::sregex_iterator(); ++it) {
    a.shape.push_back(std::stoll(it->str()));
  }
  const std::int64_t count = std::accumulate(a.shape.begin(), a.shape.end(), std::int64_t{1}, std::multiplies<>());
  const std::size_t item = descr == "<f4" ? 4 : 8;
  const std::size_t data = offset + header_len;
  if (count < 0 || count > (std::int64_t{1} << 34) || bytes.size() - data != static_cast<std::size_t>(count) * item) {
    throw bad("data size does not match the shape");
  }
  a.values.resize(static_cast<std::size_t>(count));
  if (item == 4) {
    std::memcpy(a.values.data(), bytes.data() + data, a.values.size() * 4);
  } else {
    for (std::size_t k = 0; k < a.values.size(); ++k) {
      double v = 0;
      std::memcpy(&v, bytes.data() + data + k * 8, 8);
      a.values[k] = static_cast<float>(v);
    }
  }
  return a;
}

void write_npy(const std::string& path, const std::string& role, const NpyArray& array) {
  std::string shape;
  for (std::size_t k = 0; k < array.shape.size(); ++k) shape += fmt::format("{}, ", array.shape[k]);
  if (array.shape.size() > 1) shape.resize(shape.size() - 2);  // (n,) keeps its comma, (a, b) does not
  std::string header = fmt::format("{{'descr': '<f4', 'fortran_order': False, 'shape': ({}), }}", shape);
  const std::size_t unpadded = 10 + header.size() + 1;
  header += std::string((64 - unpadded % 64) % 64, ' ') + "\n";
  std::string out("\x93NUMPY\x01\x00", 8);
  out.push_back(static_cast<char>(header.size() & 0xff));
  out.push_back(static_cast<char>(header.size() >> 8));
  out += header;
  out.append(reinterpret_cast<const char*>(array.values.data()), array.values.size() * sizeof(float));
  write_file_atomically(path, role, out);
}

}  // namespace nimbus
