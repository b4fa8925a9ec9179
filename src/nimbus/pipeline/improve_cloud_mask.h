// The whole improve_cloud_mask job on one scene: cloud and shadow probability,
// merge with the product mask, write the georeferenced mask.
#pragma once

#include <cstdint>
#include <optional>
#include <functional>
#include <string>
#include <vector>

#include "nimbus/core/error.h"
#include "nimbus/ops/chip_prediction.h"
#include "nimbus/ops/merge_cloud_masks_simple.h"

namespace nimbus {

// The most worker threads accepted (--threads); more would only exhaust the system.
inline constexpr int kMaxThreads = 1024;

// How far a run has got, for a front end to show (the library prints no progress).
struct RunProgress {
  enum class Stage {
    Prepare,  // check inputs and outputs, open the scene, load the models
    Chips,    // both models over the chips
    Merge,    // thresholds, OR with the product mask, dilation, min_area
    Write,    // mask, probabilities, preview, report
  };
  Stage stage = Stage::Prepare;
  int chips_done = 0;   // chips run so far (both models run on each chip)
  int chips_total = 0;  // chips this run needs; 0 until the Prepare stage has finished
  // True for the one event that ends `stage`; stage_seconds is then its duration.
  bool stage_finished = false;
  double stage_seconds = 0.0;
};

// "prepare", "chips", "merge", "write".
const char* stage_name(RunProgress::Stage stage);

// Called on the thread that called improve_cloud_mask: after every chip and at the
// end of every stage. It may throw (e.g. Cancelled) to stop the run.
using ProgressCallback = std::function<void(const RunProgress&)>;

struct ImproveCloudMaskOptions {
  std::string s2_raster;     // 12-band L2A stack (FarmVibes band order), nodata 0
  std::string product_mask;  // the product's cloud mask on the same grid; non-zero = cloud
  std::string out;           // output mask GeoTIFF
  std::string cloud_model;   // ONNX path; empty = embedded default
  std::string shadow_model;  // ONNX path; empty = embedded default
  ChipPredictionParams chips;
  MergeParams merge;
  std::string keep_probabilities_dir;  // when set, also write cloud/shadow probability GeoTIFFs here
  std::string preview_png;             // when set, also write an RGB + mask quicklook
  std::string report_path;             // when set, also write the report as JSON (published with the mask)
  std::string stac_out;                // when set, also write a STAC Item describing the mask (mask_stac_item.h)
  std::vector<std::string> creation_options;  // GDAL COG -co KEY=VALUE for every raster written
  int threads = 0;                     // 0 = all cores
  InferenceEngine engine = InferenceEngine::Auto;  // oneDNN, falling back to OpenCV DNN per model
  // Area of interest: at most one of aoi (GeoJSON file or text, or WKT) and bbox
  // ("minx,miny,maxx,maxy"), in aoi_crs; the output is the AOI's pixel window.
  std::string aoi;
  std::string bbox;
  std::string aoi_crs = "EPSG:4326";
  bool crop_to_aoi = false;            // pixels of the window outside the polygon are nodata
  // Unset: FarmVibes' mask (no-data pixels written as 1, nodata tag 100, a value that
  // never occurs). Set (2..255): no-data pixels are written as this value and tagged so.
  std::optional<int> nodata_value;
  // Replace existing output files; otherwise an existing output is refused before any work.
  bool overwrite = false;
  CancelCheck cancel;                  // polled between chips and stages; true: throw Cancelled, no output left
  ProgressCallback progress;           // optional; see RunProgress
};

struct ImproveCloudMaskReport {
  std::string nimbus_version;
  // What the run read and wrote, by parameter name (paths as given; the product mask
  // of a SAFE product or STAC item as "derived from <layer>"; a model left out as
  // "embedded:<name>"), and every setting as resolved (thresholds, chips, engine, ...).
  Json inputs = Json::object();
  Json outputs = Json::object();
  Json parameters = Json::object();
  // The library versions the run used: nimbus, gdal, opencv, onednn.
  Json versions = Json::object();
  int width = 0;
  int height = 0;
  int chips_per_model = 0;  // chips run per model (fewer than chips_total with an area of interest)
  int chips_total = 0;      // chips of the full scene's grid
  std::string aoi_window;   // "x0,y0,width,height" of the written window in scene pixels; empty: whole scene
  std::string cloud_model;  // origin
  std::string cloud_model_sha256;
  std::string shadow_model;
  std::string shadow_model_sha256;
  std::string cloud_engine;   // the engine that ran each model ("onednn" or "opencv")
  std::string shadow_engine;
  std::vector<std::string> model_fixes;  // graph rewrites applied by the engine that ran each model
  int models_loaded = 0;     // of this run's two models, read and parsed by this run
  int model_cache_hits = 0;  // of this run's two models, taken from the process's model cache
  double masked_fraction = 0.0;         // share of pixels set to 1
  // Percent of the valid pixels (not nodata, inside the area of interest's polygon) that are
  // masked: STAC's eo:cloud_cover. Empty when no pixel is valid.
  std::optional<double> cloud_cover;
  int chips_skipped = 0;            // all-nodata chips never sent to a model
  double seconds_prepare = 0.0;     // checks, opening the scene, loading the models
  double seconds_inference = 0.0;   // inside the models, both summed
  double seconds_chips = 0.0;       // the whole chip loop (read + inference + activation)
  double seconds_merge = 0.0;       // threshold + OR + dilation + min_area
  double seconds_write = 0.0;       // mask (and probability, preview) files
  double seconds_total = 0.0;
  double peak_rss_mb = 0.0;         // of the whole process so far
};

// Validates every input and output location before reading pixels, then runs the
// job. All outputs (mask, probabilities, preview, report) appear together at the end
// (temporary names, renamed); on any failure or cancellation none do. No output may
// be an input (same file, link, or inside a SAFE product). Throws InputError with
// the file, option and fix on bad input, Cancelled when options.cancel says so.
ImproveCloudMaskReport improve_cloud_mask(const ImproveCloudMaskOptions& options);

// The report as JSON (the CLI's --report file, the Python API's return value).
Json report_json(const ImproveCloudMaskReport& report);

// Nimbus and the libraries it runs on, name -> version ("nimbus", "gdal", "opencv",
// "onednn"), as they are at run time (the report, `nimbus --version`).
Json component_versions();

}  // namespace nimbus
