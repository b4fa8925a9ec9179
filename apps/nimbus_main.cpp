// The nimbus command line: a thin front end over the library.
#include <cstdio>
#include <exception>
#include <string>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "nimbus/core/error.h"
#include "nimbus/core/version.h"
#include "nimbus/pipeline/improve_cloud_mask.h"

namespace {

constexpr int kExitInputError = 2;
constexpr int kExitInternalError = 1;

void add_improve_cloud_mask(CLI::App& app, nimbus::ImproveCloudMaskOptions& o) {
  CLI::App* cmd = app.add_subcommand("improve-cloud-mask",
                                     "Cloud + shadow models over a Sentinel-2 L2A raster, merged with the product "
                                     "mask (FarmVibes data_ingestion/sentinel2/improve_cloud_mask)");
  cmd->fallthrough();  // global flags (-q, -v) may follow the subcommand
  cmd->add_option("--s2-raster", o.s2_raster, "12-band L2A stack, bands B01..B12 without B10, nodata 0")
      ->required();
  cmd->add_option("--product-mask", o.product_mask, "Product cloud mask on the same grid (non-zero = cloud)")
      ->required();
  cmd->add_option("--out", o.out, "Output mask GeoTIFF (uint8 0/1, nodata tag 100)")->required();
  cmd->add_option("--cloud-model", o.cloud_model,
                  "Cloud ONNX model (e.g. FarmVibes cloud_model2_cpu.onnx); default: embedded nimbus_cloud_v1");
  cmd->add_option("--shadow-model", o.shadow_model,
                  "Shadow ONNX model (e.g. FarmVibes shadow.onnx); default: embedded nimbus_shadow_v1");
  cmd->add_option("--cloud-thr", o.merge.cloud_prob_threshold, "Cloud probability threshold (strict >)")
      ->capture_default_str();
  cmd->add_option("--shadow-thr", o.merge.shadow_prob_threshold, "Shadow probability threshold (strict >)")
      ->capture_default_str();
  cmd->add_flag("--in-memory", o.chips.in_memory, "Read the whole raster once instead of once per chip");
  cmd->add_option("--closing-size", o.merge.closing_size, "Radius of the disk the mask is dilated with")
      ->capture_default_str();
  cmd->add_option("--min-area", o.merge.min_area,
                  "Drop cloud specks and fill clear holes smaller than this many pixels (0 = off)")
      ->capture_default_str();
  cmd->add_option("--window", o.chips.window_size, "Chip size in pixels")->capture_default_str();
  cmd->add_option("--overlap", o.chips.overlap, "Chip overlap fraction in [0, 1)")->capture_default_str();
  cmd->add_option("--keep-probabilities", o.keep_probabilities_dir,
                  "Also write cloud_probability.tif and shadow_probability.tif into this directory");
  cmd->add_option("--preview", o.preview_png, "Also write a PNG quicklook (true colour, mask in magenta)");
  cmd->add_option("--threads", o.threads, "Worker threads (0 = all cores)")->capture_default_str();
}

}  // namespace

int main(int argc, char** argv) {
  auto logger = spdlog::stderr_color_mt("nimbus");
  spdlog::set_default_logger(logger);
  spdlog::set_pattern("[%H:%M:%S] %v");

  CLI::App app{fmt::format("nimbus {} - trustworthy Sentinel-2 cloud masks", nimbus::kVersion)};
  app.set_version_flag("--version", std::string(nimbus::kVersion));
  app.require_subcommand(1);
  bool quiet = false;
  bool verbose = false;
  app.add_flag("-q,--quiet", quiet, "Only print errors");
  app.add_flag("-v,--verbose", verbose, "Print debugging detail (GDAL messages)");

  nimbus::ImproveCloudMaskOptions improve;
  add_improve_cloud_mask(app, improve);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  spdlog::set_level(quiet ? spdlog::level::err : verbose ? spdlog::level::debug : spdlog::level::info);

  try {
    if (app.got_subcommand("improve-cloud-mask")) {
      const nimbus::ImproveCloudMaskReport r = nimbus::improve_cloud_mask(improve);
      spdlog::info("wrote {} ({}x{}, {} chips per model, {:.1f}% masked) in {:.2f} s (inference {:.2f} s)",
                   improve.out, r.width, r.height, r.chips_per_model, 100.0 * r.masked_fraction, r.seconds_total,
                   r.seconds_inference);
    }
  } catch (const nimbus::InputError& e) {
    std::fprintf(stderr, "nimbus: error: %s\n", e.what());
    return kExitInputError;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "nimbus: internal error: %s; please report it with the command line that caused it\n",
                 e.what());
    return kExitInternalError;
  }
  return 0;
}
