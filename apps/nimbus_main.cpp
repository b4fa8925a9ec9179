// The nimbus command line: a thin front end over the library.
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <limits>
#include <map>
#include <set>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <exception>
#include <string>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "nimbus/batch/batch.h"
#include "nimbus/core/error.h"
#include "nimbus/core/input_files.h"
#include "nimbus/core/utf8.h"
#include "nimbus/core/interrupt.h"
#include "nimbus/core/log.h"
#include "nimbus/core/npy.h"
#include "nimbus/inference/backend.h"
#include "nimbus/inference/onednn_backend.h"
#include "nimbus/models/default_models.h"
#include "nimbus/version.h"
#include "nimbus/ops/registry.h"
#include "nimbus/pipeline/improve_cloud_mask.h"
#include "nimbus/pipeline/improve_cloud_mask_parameters.h"
#include "nimbus/raster/atomic_output.h"
#include "nimbus/raster/gdal_handles.h"
#include "nimbus/raster/geotiff_writer.h"
#include "nimbus/raster/sentinel2_safe.h"
#include "nimbus/workflow/describe.h"
#include "nimbus/workflow/runner.h"
#include "nimbus/workflow/workflow_graph.h"
#include "help_format.h"
#include "progress_display.h"
#include "serve_command.h"
#include "shipped_workflows.h"

namespace {

constexpr int kExitInputError = 2;
constexpr int kExitInternalError = 1;

// The error contract's one line: control characters in names (a newline in a
// path) are shown escaped instead of breaking the line.
std::string one_line(const std::string& text) {
  std::string out;
  for (const char c : text) {
    if (c == '\n') out += "\\n";
    else if (c == '\r') out += "\\r";
    else if (c == '\t') out += "\\t";
    else if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) out += fmt::format("\\x{:02x}", c);
    else out += c;
  }
  return out;
}

void print_error(const std::string& message) {
  std::fprintf(stderr, "nimbus: error: %s\n", one_line(message).c_str());
}

// An option given with an empty value (`--keep-probabilities "$UNSET_VAR"`) would
// silently mean "not given" (no probabilities, no preview): refused instead.
void refuse_empty_values(const CLI::App& app) {
  for (const CLI::Option* opt : app.get_options()) {
    for (const std::string& value : opt->results()) {
      if (value.empty()) {
        throw nimbus::InputError(fmt::format("{} was given an empty value; give a value or leave the option out",
                                             opt->get_name()));
      }
    }
  }
  for (const CLI::App* sub : app.get_subcommands()) refuse_empty_values(*sub);
}

// The CLI's spelling of a parameter named in a library message: the flag of a
// declared option of improve-cloud-mask / batch, else the name itself (workflow
// and op parameters are given by name with --param).
std::string cli_spelling(const std::string& name) {
  if (const nimbus::ParamSpec* p = nimbus::improve_cloud_mask_operation().parameter(name)) {
    return nimbus::cli_flag_of(*p);
  }
  if (name == "out_dir") return "--out-dir";
  return name;
}

// Options of a declared operation, taken as text and typed by the declaration.
struct DeclaredOptions {
  std::map<std::string, std::vector<std::string>> given;  // parameter -> the texts given
  std::map<std::string, bool> flags;                      // Bool parameters given as flags

  // The values by parameter name, converted to the declared types.
  nimbus::Json values(const nimbus::OperationSpec& operation) const;
};

// "[0, 1]", "at least 64", ... for the help text.
std::string range_text(const nimbus::ParamSpec& p) {
  const bool has_min = p.min > std::numeric_limits<double>::lowest();
  const bool has_max = p.max < std::numeric_limits<double>::max();
  if (has_min && has_max) return fmt::format(" [{}, {}]", p.min, p.max);
  if (has_min && p.min != 0.0) return fmt::format(" (at least {})", p.min);
  return {};
}

// One CLI option per declared parameter (skipping `excluded`): flags for Bool,
// repeatable for StringList; the help, default and range come from the declaration.
void add_declared_options(CLI::App* cmd, const nimbus::OperationSpec& operation, DeclaredOptions& out,
                          const std::set<std::string>& excluded = {}) {
  for (const nimbus::ParamSpec& p : operation.parameters) {
    if (excluded.count(p.name)) continue;
    const std::string flag = nimbus::cli_flag_of(p);
    std::string help = p.help;
    if (!p.choices.empty()) help += fmt::format(" {{{}}}", fmt::join(p.choices, "|"));
    if (p.type == nimbus::ParamType::Int || p.type == nimbus::ParamType::Float) help += range_text(p);
    const std::string group = nimbus::help_group_of(p);
    if (p.type == nimbus::ParamType::Bool) {
      cmd->add_flag_callback(flag, [&out, name = p.name] { out.flags[name] = true; }, help)->group(group);
      continue;
    }
    CLI::Option* option = cmd->add_option(flag, out.given[p.name], help);
    option->group(group);
    if (p.type != nimbus::ParamType::StringList) option->expected(1);  // a repeated option: the last one counts
    if (p.required) option->required();
    if (!p.default_value.is_null() && !(p.default_value.is_array() && p.default_value.empty())) {
      option->default_str(nimbus::parameter_text(p.default_value));
    }
    option->type_name(p.type == nimbus::ParamType::Int     ? "INT"
                      : p.type == nimbus::ParamType::Float ? "FLOAT"
                      : p.type == nimbus::ParamType::Path  ? "PATH"
                                                           : "TEXT");
  }
}

nimbus::Json DeclaredOptions::values(const nimbus::OperationSpec& operation) const {
  nimbus::Json values = nimbus::Json::object();
  for (const auto& [name, on] : flags) values[name] = on;
  for (const auto& entry : given) {
    // Plain names, not a structured binding: C++17 lambdas cannot capture those.
    const std::string& name = entry.first;
    const std::vector<std::string>& texts = entry.second;
    if (texts.empty()) continue;
    const nimbus::ParamSpec& p = *operation.parameter(name);
    const std::string& text = texts.back();
    const auto not_a = [&](const char* what) {
      return nimbus::ParameterError(name, fmt::format("= '{}' is not {}", text, what));
    };
    switch (p.type) {
      case nimbus::ParamType::Int: {
        long long v = 0;
        const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
        if (ec == std::errc::result_out_of_range) {
          // Still a number, just beyond 64 bits: as out of range as any other.
          throw nimbus::ParameterError(name, fmt::format("= {} is outside [{}, {}]", text,
                                                         std::max(p.min, double{std::numeric_limits<int>::min()}),
                                                         std::min(p.max, double{std::numeric_limits<int>::max()})));
        }
        if (ec != std::errc() || end != text.data() + text.size()) throw not_a("an integer");
        values[name] = v;
        break;
      }
      case nimbus::ParamType::Float: {
        char* end = nullptr;
        const double v = std::strtod(text.c_str(), &end);
        if (text.empty() || end != text.c_str() + text.size()) throw not_a("a number");
        values[name] = v;
        break;
      }
      case nimbus::ParamType::StringList: values[name] = texts; break;
      default: values[name] = text;
    }
  }
  return values;
}

// The help flag after a command's own options, under its own heading.
void add_help_flag_last(CLI::App* cmd) {
  cmd->set_help_flag("-h,--help", "Print this help and exit")->group("Other");
}

struct ImproveCommand {
  DeclaredOptions declared;
};

void add_improve_cloud_mask(CLI::App& app, ImproveCommand& c, const std::string& program) {
  const nimbus::OperationSpec& operation = nimbus::improve_cloud_mask_operation();
  CLI::App* cmd = app.add_subcommand(operation.name, operation.description);
  cmd->fallthrough();  // global flags (-q, -v) may follow the subcommand
  add_declared_options(cmd, operation, c.declared);
  add_help_flag_last(cmd);
  cmd->footer(fmt::format(
      "Examples:\n"
      "  {0} improve-cloud-mask --s2-raster S2.tif --product-mask PM.tif \\\n"
      "      --out mask.tif\n"
      "  {0} improve-cloud-mask --s2-raster S2B_MSIL2A_20230601T101559.SAFE \\\n"
      "      --out mask.tif --preview mask.png --report report.json\n"
      "  {0} improve-cloud-mask --s2-raster S2.tif --product-mask PM.tif \\\n"
      "      --out mask.tif --bbox 11.0,46.0,11.2,46.1 --crop-to-aoi\n"
      "  # FarmVibes' model files instead of the embedded models:\n"
      "  {0} improve-cloud-mask --s2-raster S2.tif --product-mask PM.tif \\\n"
      "      --out mask.tif --cloud-model \\\n"
      "      /opt/terravibes/ops/resources/cloud_models/cloud_model2_cpu.onnx \\\n"
      "      --shadow-model /opt/terravibes/ops/resources/shadow_models/shadow.onnx\n"
      "Global options (before or after the command): -q prints only errors,\n"
      "-v adds each stage's time and debugging detail.",
      program));
}

// Parameters given per scene in the manifest, or per scene in the output directory.
const std::set<std::string> kPerSceneParameters{"s2_raster", "product_mask", "out", "keep_probabilities", "preview",
                                                "report", "stac_out"};

struct BatchCommand {
  std::string manifest;
  std::string out_dir;
  bool stac_items = false;
  DeclaredOptions declared;
};

void add_batch_command(CLI::App& app, BatchCommand& b) {
  CLI::App* cmd = app.add_subcommand(
      "batch",
      "improve-cloud-mask over every scene of a CSV manifest (columns s2_raster, product_mask, id) or a STAC "
      "ItemCollection; resumes: scenes whose output verifies against its record are skipped");
  cmd->fallthrough();
  cmd->add_option("manifest", b.manifest,
                  "CSV manifest with a header row: s2_raster[,product_mask][,id]; or a STAC ItemCollection (saved "
                  "search results, JSON file or http(s) URL), one scene per item")
      ->required();
  cmd->add_option("--out-dir", b.out_dir,
                  "Directory for <id>.tif masks, their <id>.tif.nimbus.json records and batch-report.csv")
      ->required()
      ->group("Outputs");
  cmd->add_flag("--stac-items", b.stac_items,
                "Also write a STAC Item per mask (<id>.json, as improve-cloud-mask --stac-out) and their "
                "ItemCollection (items.geojson, absolute hrefs) into --out-dir")
      ->group("Outputs");
  add_declared_options(cmd, nimbus::improve_cloud_mask_operation(), b.declared, kPerSceneParameters);
  add_help_flag_last(cmd);
  cmd->footer(
      "Manifest example (paths relative to the manifest; product_mask may be\n"
      "left empty for SAFE products and STAC items):\n"
      "  s2_raster,product_mask,id\n"
      "  scenes/2023-06-01.tif,scenes/2023-06-01_pm.tif,june\n"
      "  S2B_MSIL2A_20230711T101559.SAFE,,july\n"
      "Example (run again: scenes already finished are skipped):\n"
      "  nimbus batch scenes.csv --out-dir masks --cloud-thr 0.4");
}

int run_batch_command(const BatchCommand& b, bool quiet, bool verbose, nimbus_cli::ProgressDisplay& display) {
  const std::vector<nimbus::BatchScene> scenes = nimbus::read_batch_manifest(b.manifest);
  // Every path of the manifest before anything runs: each problem once, nothing computed.
  if (const std::vector<std::string> problems = nimbus::batch_input_problems(scenes); !problems.empty()) {
    for (const std::string& problem : problems) print_error(problem);
    return kExitInputError;
  }
  const nimbus::ImproveCloudMaskOptions options =
      nimbus::batch_options(b.declared.values(nimbus::improve_cloud_mask_operation()));
  nimbus::validate(options.merge);
  nimbus::validate_creation_options(options.creation_options);
  const std::string report = (std::filesystem::path(b.out_dir) / "batch-report.csv").string();
  nimbus::check_batch_outputs(scenes, b.out_dir, options, {{b.manifest, "manifest"}}, {report}, b.stac_items);
  nimbus::validate(options.chips);
  // The per-scene pipeline logs would break the progress bar; -v brings them back.
  if (!verbose) spdlog::set_level(spdlog::level::warn);
  const int total = static_cast<int>(scenes.size());
  const auto outcomes = nimbus::run_batch(
      scenes, b.out_dir, options,
      [&display](int done, int count, const nimbus::SceneOutcome& o) { display.on_batch_scene_done(done, count, o); },
      [&display, &scenes, total](int index, const nimbus::RunProgress& p) {
        display.on_batch_scene(index, total, scenes[static_cast<std::size_t>(index)].id, p);
      },
      b.stac_items);
  display.finish();
  nimbus::write_file_atomically(report, "batch report", nimbus::batch_report_csv(outcomes));
  int done = 0, skipped = 0, failed = 0;
  for (const auto& o : outcomes) {
    done += o.status == "done";
    skipped += o.status == "skipped";
    failed += o.status == "failed";
  }
  for (const auto& o : outcomes) {
    if (o.status == "failed") {
      print_error(fmt::format("scene {}: {}", o.id, nimbus::spell_parameters(o.error, cli_spelling)));
    }
  }
  if (!quiet) {
    std::fprintf(stderr, "batch: %d done, %d skipped (output verified), %d failed; per-scene status in %s\n", done,
                 skipped, failed, report.c_str());
  }
  return failed > 0 ? kExitInputError : 0;
}

struct StackCommand {
  std::string product;
  std::string out;
  std::string product_mask_out;
  bool overwrite = false;
};

void add_stack_command(CLI::App& app, StackCommand& s) {
  CLI::App* cmd = app.add_subcommand("stack-safe",
                                     "Stack a Sentinel-2 L2A SAFE product to the 12-band 10 m raster Nimbus and "
                                     "FarmVibes use, and derive its product cloud mask");
  cmd->fallthrough();
  cmd->add_option("product", s.product, "SAFE directory, .zip or MTD_MSIL2A.xml, or a STAC item (JSON file or URL)")->required();
  cmd->add_option("--out", s.out, "12-band uint16 COG (raw DN; BOA offsets kept as band metadata)")->required();
  cmd->add_option("--product-mask-out", s.product_mask_out, "Also write the derived product mask (uint8 COG)");
  cmd->add_flag("--overwrite", s.overwrite, "Replace existing output files (otherwise refused before any work)");
}

void run_stack_command(const StackCommand& s) {
  std::vector<nimbus::RunInput> inputs{{s.product, "product"}};
  if (std::filesystem::path(s.product).filename() == "MTD_MSIL2A.xml") {
    const std::string dir = std::filesystem::path(s.product).parent_path().string();
    inputs.push_back({dir.empty() ? "." : dir, "product (its SAFE directory)"});
  }
  nimbus::OutputSet outputs(inputs, nimbus::OutputRules{s.overwrite, false});
  nimbus::AtomicOutput& out = outputs.add_file(s.out, "stack (--out)");
  nimbus::AtomicOutput* pm_out =
      s.product_mask_out.empty() ? nullptr : &outputs.add_file(s.product_mask_out, "--product-mask-out");
  const nimbus::Sentinel2Scene scene = nimbus::open_sentinel2_scene(s.product);
  if (pm_out && scene.product_mask_source == "none") {
    throw nimbus::InputError(fmt::format("'{}' has no MSK_CLASSI, cloud GML or SCL layer; no product mask to write",
                                         s.product));
  }
  out.write_with([&](const std::string& path) { nimbus::write_sentinel2_stack(scene, path, "stack (--out)"); });
  if (pm_out) {
    const nimbus::RasterReader pm(scene.product_mask_path, "derived product mask");
    const nimbus::MaskBuffer mask = pm.read_band_nonzero(1);
    nimbus::GeoTiffOptions options = nimbus::mask_geotiff_options();
    options.metadata["NIMBUS_PRODUCT_MASK_SOURCE"] = scene.product_mask_source;
    pm_out->write_with([&](const std::string& path) {
      nimbus::write_single_band_geotiff(path, "--product-mask-out", pm.grid(), mask.data(), options);
    });
  }
  outputs.commit();
  spdlog::info("wrote {} (processing baseline {}, product mask from {})", s.out,
               scene.processing_baseline.empty() ? "unknown" : scene.processing_baseline, scene.product_mask_source);
}

struct WorkflowCommands {
  std::string workflow;
  std::vector<std::string> inputs;
  std::vector<std::string> params;
  std::string out_dir;
  std::string geometry;
  std::string geometry_crs = "EPSG:4326";
  std::string cache_dir;
  bool no_cache = false;
  std::string workflows_dir;
  std::string describe_target;
  bool describe_json = false;
  std::string op_name;
  int parallel_tasks = 2;
  std::string report;
  bool overwrite = false;
};

std::string default_cache_dir() {
  if (const char* d = std::getenv("NIMBUS_CACHE_DIR")) return d;
  if (const char* x = std::getenv("XDG_CACHE_HOME")) return std::string(x) + "/nimbus";
  if (const char* h = std::getenv("HOME")) return std::string(h) + "/.cache/nimbus";
  return ".nimbus-cache";
}

// The workflows directory: explicit, else the `workflows` folder a YAML file
// sits under, else $NIMBUS_WORKFLOWS_DIR, else the one shipped with Nimbus.
std::string workflows_dir_for(const std::string& explicit_dir, const std::string& workflow) {
  namespace fs = std::filesystem;
  if (!explicit_dir.empty()) return explicit_dir;
  if (!workflow.empty() && fs::is_regular_file(workflow)) {
    for (fs::path p = fs::absolute(workflow).parent_path(); !p.empty() && p != p.root_path(); p = p.parent_path()) {
      if (p.filename() == "workflows") return p.string();
    }
  }
  if (const char* env = std::getenv("NIMBUS_WORKFLOWS_DIR")) return env;
  return shipped_workflows_dir();
}

std::pair<std::string, std::string> split_assignment(const std::string& text, const char* flag) {
  const auto eq = text.find('=');
  if (eq == std::string::npos || eq == 0) {
    throw nimbus::InputError(fmt::format("{} '{}' must be NAME=VALUE", flag, text));
  }
  return {text.substr(0, eq), text.substr(eq + 1)};
}

void add_workflow_commands(CLI::App& app, WorkflowCommands& w) {
  CLI::App* run = app.add_subcommand("run", "Run a workflow YAML (FarmVibes workflow language)");
  run->fallthrough();
  run->add_option("workflow", w.workflow, "Workflow name (e.g. data_ingestion/sentinel2/improve_cloud_mask) or YAML path")
      ->required();
  run->add_option("--input", w.inputs, "Source file, NAME=PATH (repeatable)");
  run->add_option("--param", w.params, "Workflow parameter, NAME=VALUE (repeatable; VALUE parsed as YAML)");
  run->add_option("--out-dir", w.out_dir, "Directory for the sink files (<sink>.tif)")->required();
  run->add_option("--geometry", w.geometry,
                  "Run geometry (FarmVibes' run geometry): GeoJSON file or text, or WKT, Polygon or MultiPolygon; "
                  "only the chips it needs run and the sinks are its window (docs/area_of_interest.md)");
  run->add_option("--geometry-crs", w.geometry_crs, "CRS of --geometry's coordinates (x = longitude for EPSG:4326)")
      ->capture_default_str();
  run->add_option("--cache-dir", w.cache_dir, "Op cache directory (default $NIMBUS_CACHE_DIR or ~/.cache/nimbus)");
  run->add_flag("--no-cache", w.no_cache, "Do not read or write the op cache");
  run->add_option("--workflows-dir", w.workflows_dir, "Where nested workflows are looked up by name");
  run->add_option("--parallel-tasks", w.parallel_tasks, "Tasks run at the same time")->capture_default_str();
  run->add_option("--report", w.report,
                  "Also write the run as JSON here: inputs, outputs, parameters, the model each task ran, tasks "
                  "(cache key, cached or not, seconds), versions");
  run->footer(
      "Without cloud_model/shadow_model a workflow runs Nimbus' embedded models;\n"
      "FarmVibes' model files are given as parameters.\n"
      "Examples:\n"
      "  nimbus run data_ingestion/sentinel2/improve_cloud_mask \\\n"
      "      --input s2_raster=S2.tif --input product_mask=PM.tif \\\n"
      "      --param cloud_thr=0.4 --out-dir out          # writes out/mask.tif\n"
      "  nimbus run data_ingestion/sentinel2/improve_cloud_mask \\\n"
      "      --input s2_raster=S2.tif --input product_mask=PM.tif --out-dir out \\\n"
      "      --param cloud_model=cloud_model2_cpu.onnx \\\n"
      "      --param shadow_model=shadow.onnx   # FarmVibes' files in /opt/terravibes");
  run->add_flag("--overwrite", w.overwrite,
                "Replace existing sink files in --out-dir (otherwise refused before any task runs)");

  CLI::App* workflows = app.add_subcommand("workflows", "List and describe workflows");
  workflows->require_subcommand(1);
  workflows->fallthrough();
  CLI::App* list = workflows->add_subcommand("list", "List available workflows");
  list->fallthrough();
  list->add_option("--workflows-dir", w.workflows_dir, "Workflows directory");
  CLI::App* describe = workflows->add_subcommand("describe", "Describe a workflow and print its Mermaid graph");
  describe->add_option("workflow", w.describe_target, "Workflow name or YAML path")->required();
  describe->add_option("--workflows-dir", w.workflows_dir, "Workflows directory");
  describe->fallthrough();

  CLI::App* ops = app.add_subcommand("ops", "List and describe the built-in ops");
  ops->require_subcommand(1);
  ops->fallthrough();
  ops->add_subcommand("list", "List ops")->fallthrough();
  CLI::App* op_describe = ops->add_subcommand("describe", "Ports, parameters and defaults of one op");
  op_describe->fallthrough();
  op_describe->add_option("op", w.op_name, "Op name, or improve-cloud-mask")->required();
  op_describe->add_flag("--json", w.describe_json, "Print the parameter declarations as JSON");
}

int run_workflow_command(CLI::App& app, WorkflowCommands& w) {
  if (app.got_subcommand("run")) {
    nimbus::Json overrides = nimbus::Json::object();
    for (const std::string& p : w.params) {
      const auto [k, v] = split_assignment(p, "--param");
      if (nimbus::invalid_utf8_offset(p) != std::string_view::npos) {
        throw nimbus::InputError(fmt::format("--param {}: not valid UTF-8; pass text in UTF-8", k));
      }
      overrides[k] = nimbus::yaml_scalar_to_json(v);
    }
    nimbus::RunOptions options;
    for (const std::string& i : w.inputs) {
      const auto [k, v] = split_assignment(i, "--input");
      options.inputs[k] = v;
    }
    options.out_dir = w.out_dir;
    options.geometry = w.geometry;
    options.geometry_crs = w.geometry_crs;
    options.cache_dir = w.no_cache ? "" : (w.cache_dir.empty() ? default_cache_dir() : w.cache_dir);
    options.max_parallel_tasks = w.parallel_tasks;
    options.overwrite = w.overwrite;
    const nimbus::WorkflowLibrary library{workflows_dir_for(w.workflows_dir, w.workflow)};
    const nimbus::WorkflowGraph graph = nimbus::build_workflow_graph(w.workflow, overrides, library);
    const nimbus::RunReport report = nimbus::run_workflow(graph, options, [](const nimbus::TaskRun& t) {
      spdlog::info("task {} ({}): {} in {:.2f} s", t.node, t.op, t.cache_hit ? "cached" : "done", t.seconds);
    });
    for (const auto& [sink, path] : report.outputs) spdlog::info("sink {}: {}", sink, path);
    if (!w.report.empty()) {
      nimbus::Json tasks = nimbus::Json::array();
      for (const nimbus::TaskRun& t : report.tasks) {
        tasks.push_back({{"task", t.node}, {"op", t.op}, {"cache_key", t.cache_key}, {"cache_hit", t.cache_hit},
                         {"seconds", t.seconds}});
      }
      const nimbus::Json run{{"workflow", graph.name},
                             {"nimbus_version", nimbus::kVersion},
                             {"versions", nimbus::component_versions()},
                             {"inputs", options.inputs},
                             {"outputs", report.outputs},
                             {"parameters", overrides},
                             {"models", report.models},
                             {"tasks", tasks}};
      nimbus::write_file_atomically(w.report, "--report",
                                    run.dump(2, ' ', false, nimbus::Json::error_handler_t::replace) + "\n");
    }
    return 0;
  }
  if (CLI::App* workflows = app.get_subcommand("workflows"); workflows->parsed()) {
    const std::string dir = workflows_dir_for(w.workflows_dir, w.describe_target);
    if (workflows->got_subcommand("list")) {
      if (!std::filesystem::is_directory(dir)) {
        throw nimbus::InputError(fmt::format("--workflows-dir '{}' is not a directory; give the folder that holds the "
                                             "workflow YAML files",
                                             dir));
      }
      for (const std::string& name : nimbus::list_workflows(dir)) std::printf("%s\n", name.c_str());
    } else {
      std::fputs(nimbus::describe_workflow(w.describe_target, nimbus::WorkflowLibrary{dir}).c_str(), stdout);
    }
    return 0;
  }
  if (CLI::App* ops = app.get_subcommand("ops"); ops->parsed()) {
    const nimbus::OperationSpec& improve = nimbus::improve_cloud_mask_operation();
    if (ops->got_subcommand("list")) {
      for (const auto& op : nimbus::builtin_ops()) std::printf("%-26s %s\n", op.name.c_str(), op.short_description.c_str());
      std::printf("%-26s %s\n", improve.name.c_str(), "The three ops as one command (nimbus improve-cloud-mask)");
      return 0;
    }
    const nimbus::OpDefinition* op = nimbus::find_op(w.op_name);
    if (!op && w.op_name != improve.name) {
      throw nimbus::InputError(fmt::format("unknown op '{}'; see `nimbus ops list`", w.op_name));
    }
    if (w.describe_json) {
      std::printf("%s\n", nimbus::parameters_json(op ? op->parameters : improve.parameters).dump(2).c_str());
    } else {
      std::fputs((op ? nimbus::describe_op(*op) : nimbus::describe_operation(improve)).c_str(), stdout);
    }
    return 0;
  }
  return -1;
}

// `nimbus infer`: one model on one array, to check an engine against another
// tool or to time it (warm-up runs excluded).
struct InferCommand {
  std::string model;
  std::string input;
  std::string output;
  nimbus::InferenceEngine engine = nimbus::InferenceEngine::Auto;
  int threads = 0;
  int warmup = 1;
  int repeat = 1;
};

void add_infer_command(CLI::App& app, InferCommand& c) {
  CLI::App* cmd = app.add_subcommand("infer", "Run one ONNX model on a float32 .npy array (engine checks, timing)");
  cmd->fallthrough();
  cmd->add_option("model", c.model, "ONNX model file, or embedded:<name>")->required();
  cmd->add_option("--input", c.input, "Input array, .npy float32, 1 x C x H x W or C x H x W")->required();
  cmd->add_option("--output", c.output, "Write the model's first output here (.npy float32)");
  cmd->add_option_function<std::string>(
         "--engine", [&c](const std::string& v) { c.engine = nimbus::parse_engine(v, "--engine"); },
         "Inference engine: auto, onednn or opencv")
      ->check(CLI::IsMember({"auto", "onednn", "opencv"}));
  cmd->add_option("--threads", c.threads, "Inference threads (0 = all cores)")->capture_default_str();
  cmd->add_option("--warmup", c.warmup, "Untimed runs first")->capture_default_str()->check(CLI::Range(0, 1000));
  cmd->add_option("--repeat", c.repeat, "Timed runs")->capture_default_str()->check(CLI::Range(1, 100000));
}

int run_infer_command(const InferCommand& c) {
  const nimbus::NpyArray input = nimbus::read_npy(c.input, "--input");
  std::vector<std::int64_t> chw = input.shape;
  if (chw.size() == 4 && chw[0] == 1) chw.erase(chw.begin());
  if (chw.size() != 3) {
    throw nimbus::InputError(fmt::format("--input '{}' has shape ({}); expected 1 x C x H x W or C x H x W", c.input,
                                         fmt::join(input.shape, ", ")));
  }
  const std::string role = "model";
  auto backend = nimbus::make_backend(nimbus::load_model(c.model, "", role), role, {c.engine, c.threads});
  const int ch = static_cast<int>(chw[0]), h = static_cast<int>(chw[1]), w = static_cast<int>(chw[2]);
  const auto t0 = std::chrono::steady_clock::now();
  backend->prepare(ch, h, w);
  const double prepare_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  std::vector<float> out;
  int classes = 0;
  for (int k = 0; k < c.warmup; ++k) classes = backend->run(input.values.data(), ch, h, w, out);
  std::vector<double> ms;
  for (int k = 0; k < c.repeat; ++k) {
    const auto start = std::chrono::steady_clock::now();
    classes = backend->run(input.values.data(), ch, h, w, out);
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(ms.begin(), ms.end());
  if (!c.output.empty()) nimbus::write_npy(c.output, "--output", {{1, classes, h, w}, out});
  std::printf("{\"engine\": \"%s\", \"prepare_ms\": %.3f, \"min_ms\": %.3f, \"median_ms\": %.3f, \"runs\": %d, "
              "\"gflop\": %.4f}\n",
              backend->engine(), prepare_ms, ms.front(), ms[ms.size() / 2], c.repeat, backend->flops() / 1e9);
  return 0;
}

// `nimbus --version`: Nimbus and the libraries doing the work, as linked at run time.
std::string version_text() {
  const nimbus::Json v = nimbus::component_versions();
  return fmt::format("nimbus {}\nGDAL {}\nOpenCV {}\noneDNN {}", v.at("nimbus").get<std::string>(),
                     v.at("gdal").get<std::string>(), v.at("opencv").get<std::string>(),
                     v.at("onednn").get<std::string>());
}

}  // namespace

int main(int argc, char** argv) {
  nimbus::install_interrupt_cleanup();
  // Log lines go through a sink that lets the progress bar step aside for them.
  const auto log_sink = std::make_shared<nimbus_cli::ProgressAwareSink>(
      std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
  auto logger = std::make_shared<spdlog::logger>("nimbus", log_sink);
  spdlog::register_logger(logger);
  spdlog::set_default_logger(logger);
  spdlog::set_pattern("[%H:%M:%S] %v");
  // The CLI owns the process: the library logs through its logger (so -q/-v apply), and
  // GDAL's global error handler and cache size are set here, never by the library.
  nimbus::set_logger(logger);
  nimbus::configure_gdal_for_process();

  // Usage lines name the program as it was called, not its full path.
  const std::string program =
      argc > 0 && argv[0] != nullptr && *argv[0] != '\0' ? std::filesystem::path(argv[0]).filename().string()
                                                        : std::string("nimbus");
  CLI::App app{fmt::format("nimbus {} - trustworthy Sentinel-2 cloud masks", nimbus::kVersion), program};
  app.formatter(nimbus_cli::wrapping_formatter(nimbus_cli::help_width()));  // before the subcommands: they copy it
  app.set_version_flag("--version", version_text, "Print the versions of Nimbus, GDAL, OpenCV and oneDNN and exit");
  app.require_subcommand(1);
  bool quiet = false;
  bool verbose = false;
  app.add_flag("-q,--quiet", quiet, "Only print errors (no progress)");
  app.add_flag("-v,--verbose", verbose, "Also print each stage's time and debugging detail (GDAL messages)");
  app.footer(fmt::format(
      "Examples:\n"
      "  {0} improve-cloud-mask --s2-raster S2.tif --product-mask PM.tif \\\n"
      "      --out mask.tif\n"
      "  {0} improve-cloud-mask --s2-raster S2B_MSIL2A_20230601T101559.SAFE \\\n"
      "      --out mask.tif --preview mask.png\n"
      "  {0} batch scenes.csv --out-dir masks\n"
      "  {0} run data_ingestion/sentinel2/improve_cloud_mask \\\n"
      "      --input s2_raster=S2.tif --input product_mask=PM.tif --out-dir out\n"
      "`{0} COMMAND --help` lists a command's options.",
      program));

  ImproveCommand improve;
  add_improve_cloud_mask(app, improve, program);
  BatchCommand batch;
  add_batch_command(app, batch);
  WorkflowCommands workflow;
  add_workflow_commands(app, workflow);
  StackCommand stack;
  add_stack_command(app, stack);
  InferCommand infer;
  add_infer_command(app, infer);
  ServeCommand serve;
  add_serve_command(app, serve);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    // Same contract as every other bad input: one line, exit 2.
    print_error(fmt::format("{}; see `nimbus {}--help`", e.what(),
                            app.get_subcommands().empty() ? std::string()
                                                          : app.get_subcommands().front()->get_name() + " "));
    return kExitInputError;
  }
  spdlog::set_level(quiet ? spdlog::level::err : verbose ? spdlog::level::debug : spdlog::level::info);
  nimbus_cli::ProgressDisplay display(nimbus_cli::progress_mode_for_stderr(quiet), verbose);
  log_sink->attach(&display);
  // Detached before `display` goes: a log line from a late thread must not reach it.
  struct Detach {
    nimbus_cli::ProgressAwareSink& sink;
    ~Detach() { sink.attach(nullptr); }
  } detach{*log_sink};

  try {
    refuse_empty_values(app);
    if (app.got_subcommand("improve-cloud-mask")) {
      const nimbus::OperationSpec& operation = nimbus::improve_cloud_mask_operation();
      nimbus::ImproveCloudMaskOptions options = nimbus::improve_cloud_mask_options(improve.declared.values(operation));
      options.progress = [&display](const nimbus::RunProgress& p) { display.on_scene(p); };
      const nimbus::ImproveCloudMaskReport r = nimbus::improve_cloud_mask(options);
      spdlog::info("wrote {} ({}x{}, {} chips per model, {:.1f}% masked) in {:.2f} s (inference {:.2f} s)",
                   options.out, r.width, r.height, r.chips_per_model, 100.0 * r.masked_fraction,
                   r.seconds_total, r.seconds_inference);
    } else if (app.got_subcommand("batch")) {
      return run_batch_command(batch, quiet, verbose, display);
    } else if (app.got_subcommand("stack-safe")) {
      run_stack_command(stack);
    } else if (app.got_subcommand("infer")) {
      return run_infer_command(infer);
    } else if (app.got_subcommand("serve")) {
      return run_serve_command(serve);
    } else {
      return run_workflow_command(app, workflow);
    }
  } catch (const nimbus::InputError& e) {
    display.finish();
    // Parameters named by the library are spelled as this command takes them; a bad
    // declared option also says where to read about it.
    const bool declared_options = app.got_subcommand("improve-cloud-mask") || app.got_subcommand("batch");
    if (!declared_options) {
      // Workflow and op parameters are named as in YAML; the commands' own flags as flags.
      print_error(nimbus::spell_parameters(e.what(), [](const std::string& n) {
        if (n == "geometry" || n == "geometry_crs") return n == "geometry" ? std::string("--geometry") : "--geometry-crs";
        return n == "overwrite" || n == "out_dir" ? cli_spelling(n) : n;
      }));
    } else if (dynamic_cast<const nimbus::ParameterError*>(&e) != nullptr) {
      print_error(fmt::format("{}; see `nimbus {} --help`", nimbus::spell_parameters(e.what(), cli_spelling),
                              app.got_subcommand("batch") ? "batch" : "improve-cloud-mask"));
    } else {
      print_error(nimbus::spell_parameters(e.what(), cli_spelling));
    }
    return kExitInputError;
  } catch (const std::exception& e) {
    display.finish();
    std::fprintf(stderr, "nimbus: internal error: %s; please report it with the command line that caused it\n",
                 one_line(e.what()).c_str());
    return kExitInternalError;
  }
  return 0;
}
