// What an op declares about itself (ports, parameters, cache dependencies) and
// how the workflow engine calls it. Each op's source file defines one.
#pragma once

#include "nimbus/core/error.h"
#include "nimbus/parameters.h"

#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "nimbus/tiling/pixel_window.h"

namespace nimbus {

// A file produced or consumed by an op, with FarmVibes' data type name and a
// stable id that feeds downstream cache keys.
struct Artifact {
  std::string path;
  std::string type;  // e.g. "Sentinel2Raster"
  std::string id;
  // With a run geometry: the pixels of the run's grid (the sources' grid) this file
  // covers; unset: all of it (sources, and every output of a run without geometry).
  std::optional<PixelWindow> window;
};

// A run with a geometry (FarmVibes' run geometry, an area of interest): the pixels
// of the sources' grid (grid_width x grid_height) an op's outputs must cover.
struct RunWindow {
  PixelWindow pixels;
  int grid_width = 0;
  int grid_height = 0;
};

struct PortSpec {
  std::string name;
  std::string type;  // data type name, see data_types.h
  std::string help;
};

struct OpRunContext {
  std::map<std::string, Artifact> inputs;  // by input port
  Json parameters;                         // resolved, every declared parameter present
  std::string output_dir;                  // empty directory owned by this run of the op
  std::string task;                        // task name, for messages
  CancelCheck cancel;                      // polled between chips; true: stop with Cancelled
  // Set when the run has a geometry: the op computes and writes only these pixels
  // (reading only what they need); its outputs then cover exactly window->pixels.
  std::optional<RunWindow> window;
};

using OpOutputs = std::map<std::string, Artifact>;  // by output port (path and type; ids are set by the engine)

struct OpDefinition {
  std::string name;
  std::string op_dir;  // FarmVibes' ops/<op_dir>/<name>.yaml location, checked against `op_dir:` in workflows
  std::string version = "1.0";
  std::string short_description;
  std::vector<PortSpec> inputs;
  std::vector<PortSpec> outputs;
  std::vector<ParamSpec> parameters;  // those with affects_output enter the cache key
  // Grids, so a workflow can check its inputs before any task runs: the input ports
  // whose rasters must match pixel for pixel, and the input whose grid each output has.
  std::vector<std::string> same_grid_inputs;
  std::map<std::string, std::string> output_grid_of;  // output port -> input port
  // Checks of an input file the workflow engine runs before any task when the port
  // is fed straight from a source (path, role naming the source); throw InputError.
  std::map<std::string, std::function<void(const std::string& path, const std::string& role)>> input_checks;
  std::function<OpOutputs(const OpRunContext&)> run;
  // With a run geometry: how many pixels of context around its output window the op
  // reads from its inputs (e.g. the merge's dilation radius + min_area), given its
  // parameters; the runner grows the windows of the ops upstream by it. Unset: 0.
  std::function<int(const Json& parameters)> area_halo;

  // The parameters that enter the cache key (FarmVibes' `dependencies`).
  std::vector<std::string> dependencies() const {
    std::vector<std::string> names;
    for (const auto& p : parameters)
      if (p.affects_output) names.push_back(p.name);
    return names;
  }
  const ParamSpec* parameter(const std::string& n) const {
    for (const auto& p : parameters)
      if (p.name == n) return &p;
    return nullptr;
  }
  const PortSpec* input(const std::string& n) const {
    for (const auto& p : inputs)
      if (p.name == n) return &p;
    return nullptr;
  }
  const PortSpec* output(const std::string& n) const {
    for (const auto& p : outputs)
      if (p.name == n) return &p;
    return nullptr;
  }
};

// A parameter error of an op's task as the workflow engine reports it:
// "parameter window_size of op compute_cloud_prob = 7 is below the minimum of 64",
// or "unknown parameter 'x' of op ...; its parameters: ...".
std::string op_parameter_error(const OpDefinition& op, const ParameterError& error);

}  // namespace nimbus
