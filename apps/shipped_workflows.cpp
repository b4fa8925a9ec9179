#include "shipped_workflows.h"

#include <filesystem>
#include <system_error>

// NIMBUS_BUILD_TREE_BINARY_DIR, NIMBUS_SOURCE_WORKFLOWS_DIR and NIMBUS_WORKFLOWS_FROM_BINARY_DIR
// (the install tree's workflows directory relative to its bin directory, or absolute) come
// from CMake. The same binary serves both trees: `cmake --install` copies it unchanged.
std::string shipped_workflows_dir() {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path binary = fs::canonical("/proc/self/exe", ec);
  if (ec) return NIMBUS_SOURCE_WORKFLOWS_DIR;
  const fs::path binary_dir = binary.parent_path();
  if (fs::equivalent(binary_dir, NIMBUS_BUILD_TREE_BINARY_DIR, ec)) return NIMBUS_SOURCE_WORKFLOWS_DIR;
  return (binary_dir / NIMBUS_WORKFLOWS_FROM_BINARY_DIR).lexically_normal().string();
}
