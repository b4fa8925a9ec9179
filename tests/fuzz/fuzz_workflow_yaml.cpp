// libFuzzer target: arbitrary bytes as a workflow YAML file through parsing, nested
// expansion and validation. A clean rejection is an InputError (WorkflowError is one);
// any other exception, crash or sanitizer report is a finding.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include <unistd.h>

#include <spdlog/spdlog.h>

#include "nimbus/core/error.h"
#include "nimbus/workflow/workflow_graph.h"

namespace {

const std::filesystem::path& work_dir() {
  static const std::filesystem::path dir = [] {
    auto d = std::filesystem::temp_directory_path() / ("nimbus-fuzz-workflow-" + std::to_string(::getpid()));
    std::filesystem::create_directories(d);
    return d;
  }();
  return dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  spdlog::set_level(spdlog::level::off);
  const std::filesystem::path path = work_dir() / "fuzz.yaml";
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  try {
    // Nested workflows are looked up next to the input, so a name such as "fuzz" recurses.
    nimbus::build_workflow_graph(path.string(), nimbus::Json::object(),
                                 nimbus::WorkflowLibrary{work_dir().string()});
  } catch (const nimbus::InputError&) {
  }
  return 0;
}
