#include "nimbus/workflow/single_op.h"

#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "nimbus/core/error.h"
#include "nimbus/ops/registry.h"
#include "nimbus/raster/atomic_output.h"

namespace nimbus {
namespace fs = std::filesystem;

OpOutputs run_single_op(const std::string& op_name, const std::map<std::string, std::string>& inputs,
                        const Json& parameters, const std::string& output_dir, const CancelCheck& cancel) {
  const OpDefinition* op = find_op(op_name);
  if (op == nullptr) {
    std::vector<std::string> names;
    for (const auto& o : builtin_ops()) names.push_back(o.name);
    throw InputError(fmt::format("unknown op '{}'; built-in ops: {}", op_name, fmt::join(names, ", ")));
  }
  OpRunContext ctx;
  ctx.task = op_name;
  for (const PortSpec& port : op->inputs) {
    const auto it = inputs.find(port.name);
    if (it == inputs.end()) {
      throw InputError(fmt::format("op {} needs input '{}' ({})", op_name, port.name, port.help));
    }
    ctx.inputs[port.name] = Artifact{it->second, port.type, ""};
  }
  for (const auto& [name, path] : inputs) {
    if (!ctx.inputs.count(name)) throw InputError(fmt::format("op {} has no input '{}'", op_name, name));
  }
  if (!parameters.is_null() && !parameters.is_object()) {
    throw InputError(fmt::format("op {}: parameters must be a mapping of name to value", op_name));
  }
  try {
    ctx.parameters = resolve_parameters(op->parameters, parameters);
  } catch (const ParameterError& e) {
    throw InputError(op_parameter_error(*op, e));
  }
  ensure_directory(output_dir, "output directory");
  // A private work directory next to the outputs: renames into place stay on one file system.
  static std::atomic<int> counter{0};
  const fs::path work = fs::path(output_dir) / fmt::format(".{}.nimbus-partial-{}-{}", op_name, ::getpid(), counter++);
  fs::create_directories(work);
  ctx.output_dir = work.string();
  ctx.cancel = cancel;
  try {
    OpOutputs outputs = op->run(ctx);
    // Published together; none may replace an input, a link or a special file.
    std::vector<RunInput> input_files;
    for (const auto& [port, path] : inputs) input_files.push_back({path, fmt::format("input {}", port)});
    // A single op is a building block (Python's run_op, array helpers): its outputs replace earlier ones.
    OutputSet published(input_files, OutputRules{/*overwrite=*/true, /*streams=*/false});
    for (auto& [port, artifact] : outputs) {
      const fs::path final_path = fs::path(output_dir) / fs::path(artifact.path).filename();
      const AtomicOutput& out = published.add_file(final_path.string(), fmt::format("output {}", port));
      if (std::rename(artifact.path.c_str(), out.temp_path().c_str()) != 0) {
        throw InputError(fmt::format("output {} '{}' could not be moved into place ({}); check permissions", port,
                                     final_path.string(), std::strerror(errno)));
      }
      artifact.path = final_path.string();
    }
    published.commit();
    fs::remove_all(work);
    return outputs;
  } catch (...) {
    std::error_code ec;
    fs::remove_all(work, ec);
    throw;
  }
}

}  // namespace nimbus
