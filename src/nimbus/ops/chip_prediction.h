// The chip loop shared by compute_cloud_prob and compute_shadow_prob: tile the
// scene, run the model on each chip, turn its scores into a probability and
// keep each chip's owned (write) window.
#pragma once

#include <functional>
#include <optional>
#include <vector>

#include "nimbus/core/large_buffer.h"

#include "nimbus/inference/backend.h"
#include "nimbus/ops/op_definition.h"
#include "nimbus/raster/raster_reader.h"
#include "nimbus/tiling/chip_grid.h"

namespace nimbus {

// Probability written where any input band is nodata (FarmVibes' DEFAULT_NODATA).
inline constexpr float kProbabilityNodata = 100.0f;

enum class Activation {
  SoftmaxClass1,  // 2 logits per pixel -> softmax, keep class 1
  Sigmoid,        // 1 logit per pixel -> sigmoid
};

// How one probability op turns raster values into model input and model output into probability.
struct ProbabilityHead {
  const char* op_name;  // e.g. "compute_cloud_prob", for messages
  const char* role;     // e.g. "cloud model (--cloud-model)"
  float input_scale;    // multiplies raw values before inference (1 or 1e-4f)
  Activation activation;
  int output_channels() const { return activation == Activation::SoftmaxClass1 ? 2 : 1; }
};

// How overlapping chips are combined.
enum class ChipBlend {
  Midpoint,  // FarmVibes: each overlap is cut at its midpoint, one chip per pixel (exact)
  Linear,    // Nimbus option: overlaps feathered with linear ramps, see blend_weights()
};

// Largest `downsampling` factor accepted: at 4 a 512-pixel chip already spans 20 km.
inline constexpr int kMaxDownsampling = 4;

// The smallest chip (--window, window_size) accepted: the models downsample by up to
// 32 (FPN), so a smaller chip has no context left, and the chip count (run time)
// grows with 1/window^2 - a 1-pixel window would run for days on a tile.
inline constexpr int kMinWindowSize = 64;

// The largest fixed model input accepted (a model declaring more would need
// gigabytes per chip); FarmVibes' models take 512.
inline constexpr int kMaxModelChip = 8192;

// The chip step may not fall below window / kMaxChipRedundancy (overlap 0.875):
// past that each pixel is predicted more than 64 times and a tile runs for hours.
inline constexpr int kMaxChipRedundancy = 8;

struct ChipPredictionParams {
  int window_size = 512;
  // Models run on the scene decimated by this factor (FarmVibes' `downsampling`):
  // chips of window_size on a grid of (W / ds) x (H / ds) pixels, each the
  // full-resolution pixel i * ds + ds / 2 (GDAL nearest decimation), and the
  // probabilities resampled back to the full grid bilinearly. 1 = full resolution.
  int downsampling = 1;
  double overlap = 0.25;
  ChipBlend blend = ChipBlend::Midpoint;
  bool in_memory = false;  // read the whole scene once instead of once per chip
  int prefetch_chips = 2;  // chips the reader thread may run ahead of inference
  // When set, only the chips of the full scene's grid that contribute to these
  // full-resolution pixels are read and run (the grid itself is unchanged, so
  // their probabilities are the full run's, bit for bit), and the tasks' outputs
  // cover only these pixels (region.width x region.height, row-major), so memory
  // follows the region, not the scene. Unset: the whole scene.
  std::optional<PixelWindow> region;
};

// One model to run over the scene and where its probability raster goes. Every
// buffer covers the scene's width*height pixels, or params.region's when set.
struct ProbabilityTask {
  const ProbabilityHead* head;
  InferenceBackend* model;
  FloatBuffer* output;  // resized to the pixels covered; may be null when only `above` is wanted
  // When set (pixels covered, zero-initialised by the caller), above[i] |= (p > float32(threshold)),
  // FarmVibes' merge threshold applied on the fly so the floats need not be kept.
  MaskBuffer* above = nullptr;
  double threshold = 0.0;
  // When set (pixels covered, zero-initialised by the caller), nodata[i] = 1 where the
  // probability is kProbabilityNodata (some band is nodata), so callers that keep only
  // `above` can still tell nodata from a probability over the threshold.
  MaskBuffer* nodata = nullptr;
};

struct PredictionStats {
  int chips = 0;                   // chips run (all of the grid unless params.region is set)
  int chips_in_grid = 0;           // chips of the full grid
  int chips_skipped = 0;           // all-nodata chips, never sent to a model
  double seconds_inference = 0.0;  // inside InferenceBackend::run, summed over models
  double seconds_total = 0.0;
};

// Linear-blend weights of every chip along one axis (weights[i][t], t in [0, chip)):
// 1 inside, ramping as (t + 0.5) / L over the L pixels shared with the previous chip
// and as (chip - t - 0.5) / R over the R pixels shared with the next one. A pixel's
// probability is sum(w_row * w_col * p) / sum(w_row * w_col) over the chips covering it.
std::vector<std::vector<float>> blend_weights(const std::vector<ChipSpan>& spans, int chip);

// Throws InputError naming the option when the window is below kMinWindowSize or
// the overlap is outside [0, 1) or leaves no step.
void validate(const ChipPredictionParams& params);

// Throws InputError when a 12-band scene's band descriptions name Sentinel-2 bands
// (as GDAL, rasterio and `nimbus stack-safe` write them) in another order than
// FarmVibes' B01..B12; scenes without such descriptions pass.
void check_band_order(const RasterReader& scene);

// Throws InputError, before any pixel is read, when the model cannot serve this
// scene: band count differs from the model's input channels, or the model's
// fixed chip size is smaller than the window.
void check_model_fits_scene(const InferenceBackend& model, const RasterReader& scene, const ProbabilityHead& head,
                            const ChipPredictionParams& params);

// The full-resolution pixels the chip loop reads for a width x height scene: the
// whole scene, or with params.region the read windows of the chips it needs
// (what an in-memory copy holds).
PixelWindow chip_read_extent(int width, int height, const ChipPredictionParams& params);

using ChipProgress = std::function<void(int done, int total)>;

// Probability raster of `scene` (width*height float32, row-major) with
// kProbabilityNodata where any band is nodata. Chips whose pixels are all
// nodata are not sent to the model.
FloatBuffer predict_probability(const RasterReader& scene, InferenceBackend& model, const ProbabilityHead& head,
                                       const ChipPredictionParams& params, const ChipProgress& progress = {});

// The workflow op for a probability head: FarmVibes' parameters and defaults
// (downsampling, root_dir, model_path, window_size, overlap, batch_size,
// num_workers, in_memory), one Sentinel2Raster input, one probability output.
// One default differs: model_path is Nimbus' embedded model (`default_model`, an
// "embedded:<name>" reference), so a workflow runs on a machine without FarmVibes'
// files; FarmVibes' file (`farmvibes_model`, under root_dir, FarmVibes' directory)
// is used when model_path names it.
OpDefinition probability_op_definition(const ProbabilityHead& head, const std::string& output_port,
                                       const std::string& farmvibes_root_dir, const std::string& farmvibes_model,
                                       const std::string& default_model, const std::string& short_description);

// Runs every task's model on each chip, reading each chip once (on a reader
// thread that prefetches ahead of inference). Output does not depend on timing
// or thread counts: each chip writes only its own window.
PredictionStats predict_probabilities(const RasterReader& scene, const std::vector<ProbabilityTask>& tasks,
                                      const ChipPredictionParams& params, const ChipProgress& progress = {});

// Applies the head's activation to one pixel's model scores (stride = pixels
// per channel plane). Exposed for tests.
float activate(const ProbabilityHead& head, const float* scores, std::size_t plane_stride);

}  // namespace nimbus
