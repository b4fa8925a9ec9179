// Checks on input files before a library (GDAL, protobuf, yaml-cpp) opens them,
// and on the memory a run will need before it allocates.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace nimbus {

// Throws InputError when `path` is a FIFO, socket or device: opening one blocks
// for ever or reads without end. GDAL virtual paths (/vsi...), missing paths and
// directories pass (the opener reports or handles them).
void require_not_special_file(const std::string& path, const std::string& role);

// Throws InputError when the output file `output` is the same file as one of the
// inputs (path, role): writing it would replace that input.
void require_not_an_input(const std::string& output, const std::string& output_role,
                          const std::vector<std::pair<std::string, std::string>>& inputs);

// Bytes this process may use: physical memory, lowered by RLIMIT_AS and the
// cgroup (container) memory limit when those are set.
std::uint64_t usable_memory_bytes();

// Throws InputError when `bytes` exceed usable_memory_bytes(), with both numbers:
// `what` says what needs them, e.g. "Sentinel-2 raster (--s2-raster) 'a.tif' (200000x200000 pixels)".
void require_memory(std::uint64_t bytes, const std::string& what);

}  // namespace nimbus
