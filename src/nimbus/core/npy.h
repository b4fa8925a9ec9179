// NumPy .npy files of float32 (little-endian, C order): the exchange format of
// `nimbus infer` with Python tools and tests.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace nimbus {

struct NpyArray {
  std::vector<std::int64_t> shape;
  std::vector<float> values;
};

// Reads a float32 (or float64, converted) C-order .npy; throws InputError naming `role` otherwise.
NpyArray read_npy(const std::string& path, const std::string& role);

// Writes a float32 C-order .npy atomically.
void write_npy(const std::string& path, const std::string& role, const NpyArray& array);

}  // namespace nimbus
