#include "nimbus/ops/chip_prediction.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>

#include <regex>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "nimbus/core/error.h"
#include "nimbus/models/default_models.h"
#include "nimbus/core/input_files.h"
#include "nimbus/raster/area_of_interest.h"
#include "nimbus/raster/geotiff_writer.h"
#include "nimbus/raster/sentinel2_safe.h"
#include "nimbus/tiling/chip_grid.h"

namespace nimbus {
namespace {

// Where chips come from: the file itself (one read per chip) or a copy of the
// pixels the chips read held in memory (one read in total; the whole scene
// without an area of interest). The copy keeps 16-bit integer scenes (all
// Sentinel-2 stacks) as uint16: half the memory of float32.
// With downsampling ds > 1 it serves the decimated scene (W/ds x H/ds): pixel i
// of the decimated grid is full-resolution pixel i*ds + ds/2, the sample GDAL's
// nearest decimation (FarmVibes' reader) takes.
class ChipReader {
 public:
  // `extent`: the full-resolution pixels that will be read (the in-memory copy holds only these).
  ChipReader(const RasterReader& scene, bool in_memory, int ds, const PixelWindow& extent)
      : scene_(scene), ds_(ds), extent_(extent) {
    if (!in_memory) return;
    const std::size_t width = static_cast<std::size_t>(extent.width);
    const std::size_t npix = width * static_cast<std::size_t>(extent.height);
    const std::size_t bands = static_cast<std::size_t>(scene.band_count());
    const std::string type = scene.data_type_name();
    compact_ = type == "UInt16" || type == "Byte";
    if (compact_) {
      compact_data_.resize(npix * bands);
    } else {
      float_data_.resize(npix * bands);
    }
    invalid_.resize(npix);
    // Strips bound the temporary float buffer while filling the copy.
    const int strip = 256;
    std::vector<float> buffer;
    for (int y = 0; y < extent.height; y += strip) {
      const int rows = std::min(strip, extent.height - y);
      const std::size_t strip_pixels = width * static_cast<std::size_t>(rows);
      buffer.resize(strip_pixels * bands);
      const std::size_t offset = static_cast<std::size_t>(y) * width;
      scene.read_window(extent.x0, extent.y0 + y, extent.width, rows, buffer.data(), invalid_.data() + offset);
      for (std::size_t b = 0; b < bands; ++b) {
        const float* src = buffer.data() + b * strip_pixels;
        if (compact_) {
          std::uint16_t* dst = compact_data_.data() + b * npix + offset;
          for (std::size_t i = 0; i < strip_pixels; ++i) dst[i] = static_cast<std::uint16_t>(src[i]);
        } else {
          std::copy_n(src, strip_pixels, float_data_.data() + b * npix + offset);
        }
      }
    }
  }

  int width() const { return scene_.width() / ds_; }
  int height() const { return scene_.height() / ds_; }

  // Fills data [bands, h, w] and invalid [h, w] for a window of the (decimated)
  // grid; returns the invalid count.
  std::size_t read(int x0, int y0, int w, int h, float* data, std::uint8_t* invalid) const {
    if (ds_ > 1) return read_decimated(x0, y0, w, h, data, invalid);
    return read_full(x0, y0, w, h, data, invalid);
  }

  // Full-resolution validity of the pixels of `window` (1 = nodata), row-major.
  void read_full_invalid(const PixelWindow& window, std::vector<float>& scratch, std::uint8_t* invalid) const {
    if (!invalid_.empty()) {
      require_in_extent(window.x0, window.y0, window.width, window.height);
      const std::size_t width = static_cast<std::size_t>(extent_.width);
      for (int r = 0; r < window.height; ++r) {
        std::copy_n(invalid_.data() + static_cast<std::size_t>(window.y0 - extent_.y0 + r) * width +
                        static_cast<std::size_t>(window.x0 - extent_.x0),
                    window.width, invalid + static_cast<std::size_t>(r) * static_cast<std::size_t>(window.width));
      }
      return;
    }
    scratch.resize(static_cast<std::size_t>(window.width) * static_cast<std::size_t>(window.height) *
                   static_cast<std::size_t>(scene_.band_count()));
    scene_.read_window(window.x0, window.y0, window.width, window.height, scratch.data(), invalid);
  }

 private:
  std::size_t read_decimated(int x0, int y0, int w, int h, float* data, std::uint8_t* invalid) const {
    const int bands = scene_.band_count();
    const int span = w * ds_;  // full-resolution columns covering the window
    std::vector<float> row(static_cast<std::size_t>(bands) * span);
    std::vector<std::uint8_t> row_invalid(static_cast<std::size_t>(span));
    const std::size_t plane = static_cast<std::size_t>(w) * h;
    std::size_t count = 0;
    for (int r = 0; r < h; ++r) {
      const int source_row = (y0 + r) * ds_ + ds_ / 2;
      read_full(x0 * ds_, source_row, span, 1, row.data(), row_invalid.data());
      for (int c = 0; c < w; ++c) {
        const std::size_t source = static_cast<std::size_t>(c * ds_ + ds_ / 2);
        const std::size_t out = static_cast<std::size_t>(r) * w + static_cast<std::size_t>(c);
        invalid[out] = row_invalid[source];
        count += row_invalid[source];
        for (int b = 0; b < bands; ++b) {
          data[static_cast<std::size_t>(b) * plane + out] = row[static_cast<std::size_t>(b) * span + source];
        }
      }
    }
    return count;
  }

  void require_in_extent(int x0, int y0, int w, int h) const {
    if (x0 < extent_.x0 || y0 < extent_.y0 || x0 + w > extent_.x1() || y0 + h > extent_.y1()) {
      throw InternalError(fmt::format("chip read {},{},{},{} outside the in-memory extent {}", x0, y0, w, h,
                                      extent_.text()));
    }
  }

  std::size_t read_full(int x0, int y0, int w, int h, float* data, std::uint8_t* invalid) const {
    if (invalid_.empty()) return scene_.read_window(x0, y0, w, h, data, invalid);
    require_in_extent(x0, y0, w, h);
    const std::size_t width = static_cast<std::size_t>(extent_.width);
    const std::size_t plane = width * static_cast<std::size_t>(extent_.height);
    std::size_t count = 0;
    for (int r = 0; r < h; ++r) {
      const std::size_t src = static_cast<std::size_t>(y0 - extent_.y0 + r) * width +
                              static_cast<std::size_t>(x0 - extent_.x0);
      std::uint8_t* inv = invalid + static_cast<std::size_t>(r) * w;
      std::copy_n(invalid_.data() + src, w, inv);
      for (int c = 0; c < w; ++c) count += inv[c];
      for (int b = 0; b < scene_.band_count(); ++b) {
        float* dst = data + static_cast<std::size_t>(b) * w * h + static_cast<std::size_t>(r) * w;
        if (compact_) {
          const std::uint16_t* from = compact_data_.data() + b * plane + src;
          for (int c = 0; c < w; ++c) dst[c] = static_cast<float>(from[c]);
        } else {
          std::copy_n(float_data_.data() + b * plane + src, w, dst);
        }
      }
    }
    return count;
  }

  const RasterReader& scene_;
  int ds_ = 1;
  PixelWindow extent_;
  bool compact_ = false;
  std::vector<std::uint16_t> compact_data_;
  std::vector<float> float_data_;
  std::vector<std::uint8_t> invalid_;
};

// The chip size fed to the model: its declared size when fixed, else the window.
void model_input_size(const InferenceBackend& model, int window, int& height, int& width) {
  const OnnxInputContract& c = model.model().contract;
  height = c.height > 0 ? c.height : window;
  width = c.width > 0 ? c.width : window;
}

}  // namespace

float activate(const ProbabilityHead& head, const float* scores, std::size_t plane_stride) {
  if (head.activation == Activation::Sigmoid) {
    return 1.0f / (1.0f + std::exp(-scores[0]));
  }
  // numpy: e = exp(x - max(x)); p = e / sum(e); class 1. The larger logit's term is
  // exp(0) = 1 exactly, so one exp gives the same float.
  const float x0 = scores[0];
  const float x1 = scores[plane_stride];
  if (x1 >= x0) return 1.0f / (std::exp(x0 - x1) + 1.0f);
  const float e1 = std::exp(x1 - x0);
  return e1 / (1.0f + e1);
}

namespace {

// "B1", "b01", " B8A " -> "B01" / "B8A"; empty when the text is not a Sentinel-2 band name.
std::string sentinel2_band_name(const std::string& text) {
  static const std::regex band_re(R"(\s*[Bb]0?([0-9]{1,2}|8[Aa])\s*)");
  std::smatch m;
  if (!std::regex_match(text, m, band_re)) return {};
  std::string id = m[1].str();
  if (id == "8a") id = "8A";
  if (id.size() == 1) id = "0" + id;
  return "B" + id;
}

}  // namespace

void check_band_order(const RasterReader& scene) {
  const std::vector<std::string>& expected = farmvibes_band_order();
  if (scene.band_count() != static_cast<int>(expected.size())) return;
  const std::vector<std::string> descriptions = scene.band_descriptions();
  std::vector<std::string> found;
  bool wrong = false;
  for (std::size_t i = 0; i < descriptions.size(); ++i) {
    const std::string name = sentinel2_band_name(descriptions[i]);
    found.push_back(name.empty() ? "?" : name);
    wrong = wrong || (!name.empty() && name != expected[i]);
  }
  if (wrong) {
    throw InputError(fmt::format("{} '{}' labels its bands {} but the models expect {}: the stack is in another band "
                                 "order and would give a wrong mask; re-stack it in that order (e.g. gdalbuildvrt "
                                 "-separate, or `nimbus stack-safe` from the SAFE product)",
                                 scene.role(), scene.path(), fmt::join(found, ","), fmt::join(expected, ",")));
  }
}

void validate(const ChipPredictionParams& params) {
  if (params.window_size < kMinWindowSize) {
    throw InputError(fmt::format("window size (@[window], window_size) = {} is below the minimum of {} pixels: the "
                                 "models need that much context and smaller chips multiply the run time; use e.g. "
                                 "@[window] 512 (FarmVibes' default)",
                                 params.window_size, kMinWindowSize));
  }
  const int step = chip_step(params.window_size, params.overlap);
  if (static_cast<long long>(step) * kMaxChipRedundancy < params.window_size) {
    throw InputError(fmt::format("overlap (@[overlap], overlap) = {} leaves a step of {} pixels for {}-pixel chips: "
                                 "every pixel would be predicted more than {} times; use an overlap of at most "
                                 "{} (default 0.25)",
                                 params.overlap, step, params.window_size, kMaxChipRedundancy * kMaxChipRedundancy,
                                 1.0 - 1.0 / kMaxChipRedundancy));
  }
}

void check_model_fits_scene(const InferenceBackend& model, const RasterReader& scene, const ProbabilityHead& head,
                            const ChipPredictionParams& params) {
  const OnnxInputContract& c = model.model().contract;
  if (c.channels > 0 && c.channels != scene.band_count()) {
    throw InputError(fmt::format("{} '{}' expects {} input channels but {} '{}' has {} bands; stack the scene as the "
                                 "model was trained (FarmVibes: 12 bands B01,B02,B03,B04,B05,B06,B07,B08,B8A,B09,B11,"
                                 "B12) or pass a model for {} bands",
                                 head.role, model.model().origin, c.channels, scene.role(), scene.path(),
                                 scene.band_count(), scene.band_count()));
  }
  // After the cheap channel check: this one reads a sample of every float band.
  scene.require_digital_numbers();
  check_band_order(scene);
  int mh = 0, mw = 0;
  model_input_size(model, params.window_size, mh, mw);
  if ((c.height > 0 && c.height > kMaxModelChip) || (c.width > 0 && c.width > kMaxModelChip)) {
    throw InputError(fmt::format("{} '{}' declares a fixed input of {}x{} pixels, more than the {} Nimbus feeds a "
                                 "model; export it with dynamic or smaller height and width",
                                 head.role, model.model().origin, c.height, c.width, kMaxModelChip));
  }
  if (mh < params.window_size || mw < params.window_size) {
    throw InputError(fmt::format("{} '{}' takes {}x{} chips, smaller than @[window] {}; use @[window] {} or less",
                                 head.role, model.model().origin, mh, mw, params.window_size, std::min(mh, mw)));
  }
}

namespace {

// One chip as read from the scene, travelling from the reader thread to the models.
struct ChipData {
  int index = -1;  // row-major chip index; the stream ends when the queue is closed
  std::vector<float> values;
  std::vector<std::uint8_t> invalid;
  std::size_t invalid_count = 0;
};

// A bounded FIFO between one producer and one consumer; close() ends both sides.
class ChipQueue {
 public:
  explicit ChipQueue(std::size_t capacity) : capacity_(std::max<std::size_t>(1, capacity)) {}
  bool push(ChipData&& chip) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return closed_ || queue_.size() < capacity_; });
    if (closed_) return false;
    queue_.push_back(std::move(chip));
    cv_.notify_all();
    return true;
  }
  bool pop(ChipData& chip) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return closed_ || !queue_.empty(); });
    if (queue_.empty()) return false;
    chip = std::move(queue_.front());
    queue_.pop_front();
    cv_.notify_all();
    return true;
  }
  void close() {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
    cv_.notify_all();
  }

 private:
  std::size_t capacity_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<ChipData> queue_;
  bool closed_ = false;
};

// Accumulators of the linear blend for the rows one chip row can still touch:
// rows [y0, y0 + chip) of the scene, full width.
struct BlendBand {
  int y0 = 0;
  std::vector<float> sum_wp;
  std::vector<float> sum_w;
  std::vector<std::uint8_t> invalid;
};

}  // namespace

std::vector<std::vector<float>> blend_weights(const std::vector<ChipSpan>& spans, int chip) {
  std::vector<std::vector<float>> weights(spans.size(), std::vector<float>(static_cast<std::size_t>(chip), 1.0f));
  for (std::size_t i = 0; i < spans.size(); ++i) {
    const int left = i > 0 ? spans[i - 1].read_end - spans[i].read_start : 0;
    const int right = i + 1 < spans.size() ? spans[i].read_end - spans[i + 1].read_start : 0;
    for (int t = 0; t < chip; ++t) {
      float w = 1.0f;
      if (left > 0) w = std::min(w, (static_cast<float>(t) + 0.5f) / static_cast<float>(left));
      if (right > 0) w = std::min(w, (static_cast<float>(chip - t) - 0.5f) / static_cast<float>(right));
      weights[i][static_cast<std::size_t>(t)] = w;
    }
  }
  return weights;
}

namespace {

// The chip loop, in three parts: a chip source (PrefetchedChips: chips read in
// order on a reader thread), a model step per task (ModelStep: the chip fitted
// to the model's input, the run, the probability per pixel) and an output
// writer per task (MidpointWriter or LinearBlendWriter, into TaskSinks).

// Where one task's probabilities go: any of the probability raster, the
// above-threshold mask and the nodata mask (see ProbabilityTask), each covering
// `window` of the grid (row-major, window.width pixels per row).
class TaskSinks {
 public:
  TaskSinks(const ProbabilityTask& t, const PixelWindow& window)
      : output_(t.output ? t.output->data() : nullptr),
        above_(t.above ? t.above->data() : nullptr),
        nodata_(t.nodata ? t.nodata->data() : nullptr),
        threshold_(static_cast<float>(t.threshold)),
        window_(window) {}

  const PixelWindow& window() const { return window_; }
  // The sinks' index of grid pixel (x, y), which lies inside window().
  std::size_t index(int x, int y) const {
    return static_cast<std::size_t>(y - window_.y0) * static_cast<std::size_t>(window_.width) +
           static_cast<std::size_t>(x - window_.x0);
  }

  // Pixel i (see index) gets probability p; `missing` marks nodata.
  void put(std::size_t i, float p, bool missing) const {
    if (output_) output_[i] = p;
    if (above_) above_[i] |= (p > threshold_) ? 1 : 0;
    if (nodata_ && missing) nodata_[i] = 1;
  }

 private:
  float* output_;
  std::uint8_t* above_;
  std::uint8_t* nodata_;
  float threshold_;
  PixelWindow window_;
};

std::size_t pixel_count(const PixelWindow& window) {
  return static_cast<std::size_t>(window.width) * static_cast<std::size_t>(window.height);
}

// Sizes every task's sinks for `window`: the probability raster starts as nodata.
void prepare_sinks(const std::vector<ProbabilityTask>& tasks, const PixelWindow& window) {
  const std::size_t npix = pixel_count(window);
  for (const ProbabilityTask& t : tasks) {
    if (t.output) t.output->assign(npix, kProbabilityNodata);
    if (t.above && t.above->size() != npix) throw InternalError("threshold sink has the wrong size");
    if (t.nodata && t.nodata->size() != npix) throw InternalError("nodata sink has the wrong size");
  }
}

// Throws InputError before any chip is read when the loop's buffers would not fit in memory.
// `sink_bytes`: the probability rasters the loop fills; `extent`: the pixels it reads.
void require_chip_loop_memory(const RasterReader& scene, const std::vector<ProbabilityTask>& tasks,
                              const ChipPredictionParams& params, std::uint64_t sink_bytes,
                              const PixelWindow& extent) {
  const int chip = params.window_size;
  const int bands = scene.band_count();
  const std::size_t chip_pixels = static_cast<std::size_t>(chip) * chip;
  const std::uint64_t in_memory =
      params.in_memory ? (static_cast<std::uint64_t>(bands) * 4 + 1) * pixel_count(extent) : 0;
  // Chips in flight (queue, reader, consumer) and each model's input and scores.
  std::uint64_t chip_bytes = static_cast<std::uint64_t>(std::max(1, params.prefetch_chips) + 2) *
                             static_cast<std::uint64_t>(bands) * chip_pixels * 4;
  for (const ProbabilityTask& t : tasks) {
    int mh = 0, mw = 0;
    model_input_size(*t.model, chip, mh, mw);
    chip_bytes += static_cast<std::uint64_t>(bands + 2) * static_cast<std::uint64_t>(mh) * static_cast<std::uint64_t>(mw) * 4;
  }
  require_memory(sink_bytes + in_memory + chip_bytes,
                 fmt::format("{} '{}' ({}x{} pixels, {} bands, {}-pixel chips)", scene.role(), scene.path(),
                             scene.width(), scene.height(), bands, chip));
}

// The chip source: every chip of `grid`, in index order, read on a thread of its
// own that runs up to `prefetch` chips ahead (GDAL decode overlaps inference).
class PrefetchedChips {
 public:
  // Reads the chips `indices` (ascending) of the grid, in that order.
  PrefetchedChips(const ChipReader& reader, const ChipGrid& grid, const std::vector<int>& indices, int chip,
                  int bands, int prefetch)
      : queue_(static_cast<std::size_t>(std::max(1, prefetch))), indices_(indices) {
    producer_ = std::thread([this, &reader, &grid, chip, bands] {
      const std::size_t chip_pixels = static_cast<std::size_t>(chip) * chip;
      try {
        for (const int index : indices_) {
          const Chip c = grid.chip(index);
          ChipData data;
          data.index = index;
          data.values.resize(static_cast<std::size_t>(bands) * chip_pixels);
          data.invalid.resize(chip_pixels);
          data.invalid_count = reader.read(c.cols.read_start, c.rows.read_start, chip, chip, data.values.data(),
                                           data.invalid.data());
          if (!queue_.push(std::move(data))) return;
        }
      } catch (...) {
        read_error_ = std::current_exception();
      }
      queue_.close();
    });
  }
  // Stops the reader (when the consumer gave up early) and waits for it.
  ~PrefetchedChips() {
    queue_.close();
    if (producer_.joinable()) producer_.join();
  }
  PrefetchedChips(const PrefetchedChips&) = delete;
  PrefetchedChips& operator=(const PrefetchedChips&) = delete;

  // The next chip; false after the last one. A read error is rethrown once the
  // chips read before it have been consumed.
  bool next(ChipData& data) {
    if (queue_.pop(data)) {
      if (expected_ >= indices_.size() || data.index != indices_[expected_++]) {
        throw InternalError("chip stream out of order");
      }
      return true;
    }
    producer_.join();
    if (read_error_) std::rethrow_exception(read_error_);
    return false;
  }

 private:
  ChipQueue queue_;
  std::exception_ptr read_error_;  // written by the reader thread before it closes the queue
  const std::vector<int> indices_;
  std::size_t expected_ = 0;
  std::thread producer_;
};

// One task's model step: the chip scaled and zero-padded to the model's input,
// the run, the check of its output, and the probability of each pixel.
class ModelStep {
 public:
  ModelStep(const ProbabilityTask& task, int chip, int bands) : head_(*task.head), model_(*task.model), chip_(chip),
                                                                 bands_(bands) {
    model_input_size(model_, chip, mh_, mw_);
    model_pixels_ = static_cast<std::size_t>(mh_) * mw_;
  }

  // Runs the model on the chip; returns the seconds spent inside it.
  double run(const ChipData& data) {
    const std::size_t chip_pixels = static_cast<std::size_t>(chip_) * chip_;
    // The chip goes to the model as read when it needs neither scaling nor padding.
    const bool as_read = head_.input_scale == 1.0f && mh_ == chip_ && mw_ == chip_;
    // Zero padding (FarmVibes' nodata) up to the model's fixed size when the window is smaller.
    if (!as_read) input_.assign(static_cast<std::size_t>(bands_) * model_pixels_, 0.0f);
    for (int b = 0; b < bands_ && !as_read; ++b) {
      for (int r = 0; r < chip_; ++r) {
        const float* src = data.values.data() + b * chip_pixels + static_cast<std::size_t>(r) * chip_;
        float* dst = input_.data() + b * model_pixels_ + static_cast<std::size_t>(r) * mw_;
        if (head_.input_scale == 1.0f) {
          std::copy_n(src, chip_, dst);
        } else {
          for (int x = 0; x < chip_; ++x) dst[x] = src[x] * head_.input_scale;
        }
      }
    }
    const auto t0 = std::chrono::steady_clock::now();
    const int out_channels = model_.run(as_read ? data.values.data() : input_.data(), bands_, mh_, mw_, scores_);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (out_channels != head_.output_channels()) {
      throw InputError(fmt::format("{} '{}' outputs {} channel(s) per pixel; {} needs {} ({})", head_.role,
                                   model_.model().origin, out_channels, head_.op_name, head_.output_channels(),
                                   head_.output_channels() == 2 ? "logits for clear and cloud, class 1 = cloud"
                                                                : "one shadow logit"));
    }
    return seconds;
  }

  // The probability of pixel (r, x) of chip `c` from the last run; throws on NaN scores.
  float probability_at(const Chip& c, int r, int x) const {
    const float p = activate(head_, scores_.data() + static_cast<std::size_t>(r) * mw_ + x, model_pixels_);
    if (p != p) {
      throw InputError(fmt::format("{} '{}' produced NaN scores (chip {} at x={} y={}); the model is broken "
                                   "for this input, check its export and weights",
                                   head_.role, model_.model().origin, c.index, c.cols.read_start + x,
                                   c.rows.read_start + r));
    }
    return p;
  }

 private:
  const ProbabilityHead& head_;
  InferenceBackend& model_;
  int chip_, bands_;
  int mh_ = 0, mw_ = 0;
  std::size_t model_pixels_ = 0;
  std::vector<float> input_;
  std::vector<float> scores_;
};

// An output writer: takes each chip's probabilities, in chip order, to a task's sinks.
class ChipWriter {
 public:
  virtual ~ChipWriter() = default;
  // `skip`: the chip is all nodata and the model did not run on it.
  virtual void write(const Chip& c, const ChipData& data, bool skip, const ModelStep& step) = 0;
  // A chip outside the requested region: not read, not run, contributes nothing.
  virtual void pass(const Chip& c, int index) = 0;
};

// FarmVibes' midpoint cut: each chip writes only its own window, so the
// in-order single writer needs no accumulation.
class MidpointWriter final : public ChipWriter {
 public:
  MidpointWriter(const ProbabilityTask& task, const PixelWindow& window, int chip) : sinks_(task, window),
                                                                                      chip_(chip) {}

  // The chip's own window, cut to the sinks' window.
  void write(const Chip& c, const ChipData& data, bool skip, const ModelStep& step) override {
    const PixelWindow& w = sinks_.window();
    const int r0 = std::max(c.rows.chip_start(), w.y0 - c.rows.read_start);
    const int r1 = std::min(c.rows.chip_end(), w.y1() - c.rows.read_start);
    const int x0 = std::max(c.cols.chip_start(), w.x0 - c.cols.read_start);
    const int x1 = std::min(c.cols.chip_end(), w.x1() - c.cols.read_start);
    for (int r = r0; r < r1; ++r) {
      const std::size_t row = sinks_.index(c.cols.read_start + x0, c.rows.read_start + r);
      const std::uint8_t* inv = data.invalid.data() + static_cast<std::size_t>(r) * chip_;
      for (int x = x0; x < x1; ++x) {
        const bool missing = skip || inv[x];
        const float p = missing ? kProbabilityNodata : step.probability_at(c, r, x);
        sinks_.put(row + static_cast<std::size_t>(x - x0), p, missing);
      }
    }
  }
  // Its window keeps the sinks' initial values (nodata probability, mask 0).
  void pass(const Chip&, int) override {}

 private:
  TaskSinks sinks_;
  int chip_;
};

// The linear blend: every pixel of a chip contributes, weighted (blend_weights);
// rows are complete, and written, after the last chip of the chip row.
class LinearBlendWriter final : public ChipWriter {
 public:
  // Accumulates only the columns and rows of `window`, the pixels the sinks keep.
  LinearBlendWriter(const ProbabilityTask& task, const ChipGrid& grid, const PixelWindow& window, int height,
                    int chip)
      : sinks_(task, window), grid_(grid), width_(static_cast<std::size_t>(window.width)), height_(height),
        chip_(chip),
        chip_cols_(static_cast<int>(grid.col_spans().size())),
        row_weights_(blend_weights(grid.row_spans(), chip)),
        col_weights_(blend_weights(grid.col_spans(), chip)) {
    band_.sum_wp.assign(static_cast<std::size_t>(chip) * width_, 0.0f);
    band_.sum_w.assign(static_cast<std::size_t>(chip) * width_, 0.0f);
    band_.invalid.assign(static_cast<std::size_t>(chip) * width_, 0);
  }

  void write(const Chip& c, const ChipData& data, bool skip, const ModelStep& step) override {
    const int chip_row = data.index / chip_cols_, chip_col = data.index % chip_cols_;
    const std::vector<float>& wy = row_weights_[static_cast<std::size_t>(chip_row)];
    const std::vector<float>& wx = col_weights_[static_cast<std::size_t>(chip_col)];
    const PixelWindow& win = sinks_.window();
    const int r0 = std::max(0, win.y0 - c.rows.read_start), r1 = std::min(chip_, win.y1() - c.rows.read_start);
    const int x0 = std::max(0, win.x0 - c.cols.read_start), x1 = std::min(chip_, win.x1() - c.cols.read_start);
    for (int r = r0; r < r1; ++r) {
      // The band's columns are the window's; `local` is chip column x0's place in it.
      const std::size_t local = static_cast<std::size_t>(c.rows.read_start + r - band_.y0) * width_ +
                                static_cast<std::size_t>(c.cols.read_start + x0 - win.x0);
      const std::uint8_t* inv = data.invalid.data() + static_cast<std::size_t>(r) * chip_;
      for (int x = x0; x < x1; ++x) {
        if (skip || inv[x]) {
          band_.invalid[local + static_cast<std::size_t>(x - x0)] = 1;
          continue;
        }
        const float w = wy[static_cast<std::size_t>(r)] * wx[static_cast<std::size_t>(x)];
        band_.sum_wp[local + static_cast<std::size_t>(x - x0)] += w * step.probability_at(c, r, x);
        band_.sum_w[local + static_cast<std::size_t>(x - x0)] += w;
      }
    }
    end_of_chip(data.index);
  }
  void pass(const Chip&, int index) override { end_of_chip(index); }

 private:
  // After the last chip of a chip row, the rows above the next chip row are complete.
  void end_of_chip(int index) {
    const int chip_row = index / chip_cols_, chip_col = index % chip_cols_;
    if (chip_col == chip_cols_ - 1) {
      const auto& rows = grid_.row_spans();
      const int next = chip_row + 1 < static_cast<int>(rows.size()) ? rows[static_cast<std::size_t>(chip_row + 1)].read_start
                                                                    : height_;
      finish_rows(next);
    }
  }

  // Rows [band.y0, end) are complete: write them to the sinks, then slide the band.
  void finish_rows(int end) {
    const PixelWindow& win = sinks_.window();
    for (int y = std::max(band_.y0, win.y0); y < std::min(end, win.y1()); ++y) {
      const std::size_t local = static_cast<std::size_t>(y - band_.y0) * width_;
      const std::size_t global = sinks_.index(win.x0, y);
      for (std::size_t x = 0; x < width_; ++x) {
        const float w = band_.sum_w[local + x];
        const bool missing = band_.invalid[local + x] || w <= 0.0f;
        const float p = missing ? kProbabilityNodata : band_.sum_wp[local + x] / w;
        sinks_.put(global + x, p, missing);
      }
    }
    // Slide the rows still open to the front; the freed rows start empty.
    const auto slide = static_cast<std::ptrdiff_t>(
        std::min(static_cast<std::size_t>(end - band_.y0), static_cast<std::size_t>(chip_)) * width_);
    const auto shift = [slide](auto& v, auto empty) {
      std::copy(v.begin() + slide, v.end(), v.begin());
      std::fill(v.end() - slide, v.end(), empty);
    };
    shift(band_.sum_wp, 0.0f);
    shift(band_.sum_w, 0.0f);
    shift(band_.invalid, std::uint8_t{0});
    band_.y0 = end;
  }

  TaskSinks sinks_;
  const ChipGrid& grid_;
  std::size_t width_;
  int height_, chip_, chip_cols_;
  std::vector<std::vector<float>> row_weights_, col_weights_;
  BlendBand band_;
};

// The chip loop over the reader's grid (the scene, or its decimated copy).
// `region`, when set, is in the reader's grid's pixels: only its chips run and
// the tasks' sinks cover only it; unset, the whole grid.
PredictionStats predict_on_grid(const ChipReader& reader, const RasterReader& scene,
                                const std::vector<ProbabilityTask>& tasks, const ChipPredictionParams& params,
                                const std::optional<PixelWindow>& region, const ChipProgress& progress) {
  const auto start = std::chrono::steady_clock::now();
  const ChipGrid grid(reader.width(), reader.height(), params.window_size, params.overlap);
  const int chip = params.window_size;
  const int bands = scene.band_count();
  const std::size_t chip_pixels = static_cast<std::size_t>(chip) * chip;
  const PixelWindow window = region ? *region : PixelWindow{0, 0, reader.width(), reader.height()};
  prepare_sinks(tasks, window);

  std::vector<ModelStep> steps;
  std::vector<std::unique_ptr<ChipWriter>> writers;
  for (const ProbabilityTask& t : tasks) {
    steps.emplace_back(t, chip, bands);
    if (params.blend == ChipBlend::Linear) {
      writers.push_back(std::make_unique<LinearBlendWriter>(t, grid, window, reader.height(), chip));
    } else {
      writers.push_back(std::make_unique<MidpointWriter>(t, window, chip));
    }
  }

  std::vector<int> selected;
  if (region) {
    selected = grid.chips_meeting(*region);
  } else {
    selected.resize(static_cast<std::size_t>(grid.size()));
    for (int i = 0; i < grid.size(); ++i) selected[static_cast<std::size_t>(i)] = i;
  }
  PredictionStats stats;
  stats.chips = static_cast<int>(selected.size());
  stats.chips_in_grid = grid.size();
  PrefetchedChips chips(reader, grid, selected, chip, bands, params.prefetch_chips);
  ChipData data;
  int done = 0;
  std::size_t next_selected = 0;
  for (int index = 0; index < grid.size(); ++index) {
    const Chip c = grid.chip(index);
    if (next_selected >= selected.size() || selected[next_selected] != index) {
      for (auto& writer : writers) writer->pass(c, index);
      continue;
    }
    ++next_selected;
    if (!chips.next(data)) throw InternalError("chip stream ended early");
    const bool skip = data.invalid_count == chip_pixels;
    stats.chips_skipped += skip ? 1 : 0;
    for (std::size_t k = 0; k < tasks.size(); ++k) {
      if (!skip) stats.seconds_inference += steps[k].run(data);
      writers[k]->write(c, data, skip, steps[k]);
    }
    if (progress) progress(++done, stats.chips);
  }
  if (chips.next(data)) throw InternalError("chip stream has chips left over");
  stats.seconds_total = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return stats;
}

// Full-resolution probabilities from the decimated grid's: bilinear between the
// four nearest decimated pixel centres, leaving out taps that are nodata (weights
// renormalised); nodata where the full-resolution pixel is nodata, or where all
// four taps are. Written to the tasks' sinks, which cover `window` of the full
// grid, row by row; `coarse` covers `coarse_window` of the decimated grid.
void upsample_to_full_grid(const ChipReader& reader, const RasterReader& scene, int ds,
                           const std::vector<ProbabilityTask>& tasks, const std::vector<FloatBuffer>& coarse,
                           const PixelWindow& window, const PixelWindow& coarse_window) {
  const int width = scene.width(), height = scene.height();
  const int cw = reader.width(), ch = reader.height();
  struct Tap {
    int i0, i1;
    float w1;
  };
  const auto taps = [ds](int n, int coarse_n) {
    std::vector<Tap> t(static_cast<std::size_t>(n));
    for (int x = 0; x < n; ++x) {
      const double u = std::clamp((x + 0.5) / ds - 0.5, 0.0, static_cast<double>(coarse_n - 1));
      const int i0 = static_cast<int>(u);
      t[static_cast<std::size_t>(x)] = {i0, std::min(i0 + 1, coarse_n - 1), static_cast<float>(u - i0)};
    }
    return t;
  };
  const std::vector<Tap> tx = taps(width, cw), ty = taps(height, ch);
  prepare_sinks(tasks, window);
  std::vector<TaskSinks> sinks_of;
  for (const ProbabilityTask& t : tasks) sinks_of.emplace_back(t, window);
  const std::size_t coarse_width = static_cast<std::size_t>(coarse_window.width);
  // Index in `coarse` of decimated pixel (i, j), which the window's taps keep inside coarse_window.
  const auto at = [&coarse_window, coarse_width](int i, int j) {
    return static_cast<std::size_t>(j - coarse_window.y0) * coarse_width + static_cast<std::size_t>(i - coarse_window.x0);
  };
  const std::size_t out_width = static_cast<std::size_t>(window.width);
  const int strip = 64;
  std::vector<float> scratch;
  std::vector<std::uint8_t> invalid;
  for (int y0 = window.y0; y0 < window.y1(); y0 += strip) {
    const int rows = std::min(strip, window.y1() - y0);
    invalid.resize(out_width * static_cast<std::size_t>(rows));
    reader.read_full_invalid(PixelWindow{window.x0, y0, window.width, rows}, scratch, invalid.data());
    for (int r = 0; r < rows; ++r) {
      const int y = y0 + r;
      const Tap& vy = ty[static_cast<std::size_t>(y)];
      const std::size_t row = sinks_of.empty() ? 0 : sinks_of.front().index(window.x0, y);
      for (std::size_t k = 0; k < tasks.size(); ++k) {
        const TaskSinks& sinks = sinks_of[k];
        const float* values_of = coarse[k].data();
        for (int x = window.x0; x < window.x1(); ++x) {
          float p = kProbabilityNodata;
          const std::size_t i = static_cast<std::size_t>(x - window.x0);
          if (!invalid[static_cast<std::size_t>(r) * out_width + i]) {
            const Tap& vx = tx[static_cast<std::size_t>(x)];
            const float values[4] = {values_of[at(vx.i0, vy.i0)], values_of[at(vx.i1, vy.i0)],
                                     values_of[at(vx.i0, vy.i1)], values_of[at(vx.i1, vy.i1)]};
            const float weights[4] = {(1 - vy.w1) * (1 - vx.w1), (1 - vy.w1) * vx.w1, vy.w1 * (1 - vx.w1),
                                      vy.w1 * vx.w1};
            float sum = 0.0f, norm = 0.0f;
            for (int q = 0; q < 4; ++q) {
              if (values[q] == kProbabilityNodata) continue;
              sum += weights[q] * values[q];
              norm += weights[q];
            }
            if (norm > 0.0f) p = sum / norm;
          }
          sinks.put(row + i, p, p == kProbabilityNodata);
        }
      }
    }
  }
}

// The decimated pixels the bilinear taps of full-resolution `region` reach:
// pixel x takes coarse floor((x + 0.5) / ds - 0.5) and the one after it.
PixelWindow coarse_region_of(const PixelWindow& r, int ds, int coarse_width, int coarse_height) {
  const int cx0 = std::max(0, r.x0 / ds - 1), cy0 = std::max(0, r.y0 / ds - 1);
  const int cx1 = std::min(coarse_width, (r.x1() - 1) / ds + 2);
  const int cy1 = std::min(coarse_height, (r.y1() - 1) / ds + 2);
  return PixelWindow{cx0, cy0, std::max(1, cx1 - cx0), std::max(1, cy1 - cy0)};
}

}  // namespace

PredictionStats predict_probabilities(const RasterReader& scene, const std::vector<ProbabilityTask>& tasks,
                                      const ChipPredictionParams& params, const ChipProgress& progress) {
  validate(params);
  const int ds = params.downsampling;
  if (ds < 1 || ds > kMaxDownsampling) {
    throw InputError(fmt::format("downsampling is {}; use 1 (full resolution) to {}", ds, kMaxDownsampling));
  }
  if (ds > 1 && (scene.width() / ds < params.window_size || scene.height() / ds < params.window_size)) {
    throw InputError(fmt::format("{} '{}' is {}x{} pixels; decimated by downsampling {} it is {}x{}, smaller than the "
                                 "{}-pixel window; use a smaller downsampling or window",
                                 scene.role(), scene.path(), scene.width(), scene.height(), ds, scene.width() / ds,
                                 scene.height() / ds, params.window_size));
  }
  for (const ProbabilityTask& t : tasks) {
    check_model_fits_scene(*t.model, scene, *t.head, params);
    int mh = 0, mw = 0;
    model_input_size(*t.model, params.window_size, mh, mw);
    t.model->prepare(scene.band_count(), mh, mw);  // compile for the chip shape before any pixel is read
  }
  if (params.region && (params.region->empty() || params.region->x0 < 0 || params.region->y0 < 0 ||
                        params.region->x1() > scene.width() || params.region->y1() > scene.height())) {
    throw InternalError("chip region lies outside the scene");
  }
  const PixelWindow extent = chip_read_extent(scene.width(), scene.height(), params);
  const int cw = scene.width() / ds, ch = scene.height() / ds;
  std::optional<PixelWindow> coarse_region;
  if (ds > 1 && params.region) coarse_region = coarse_region_of(*params.region, ds, cw, ch);
  {
    // Float sinks: the region's (the whole scene's) pixels, and with downsampling the decimated ones too.
    std::uint64_t sink_bytes = 0;
    const PixelWindow full{0, 0, scene.width(), scene.height()};
    const PixelWindow coarse_window = coarse_region ? *coarse_region : PixelWindow{0, 0, cw, ch};
    for (const ProbabilityTask& t : tasks) {
      sink_bytes += t.output ? 4 * pixel_count(params.region ? *params.region : full) : 0;
      sink_bytes += ds > 1 ? 4 * pixel_count(coarse_window) : 0;
    }
    require_chip_loop_memory(scene, tasks, params, sink_bytes, extent);
  }
  const ChipReader reader(scene, params.in_memory, ds, extent);
  if (ds == 1) return predict_on_grid(reader, scene, tasks, params, params.region, progress);
  // Chips of window x window on the decimated grid (each covers window*ds full-resolution
  // pixels), probabilities kept at that resolution, then brought back to the full grid.
  std::vector<FloatBuffer> coarse(tasks.size());
  std::vector<ProbabilityTask> coarse_tasks;
  for (std::size_t k = 0; k < tasks.size(); ++k) {
    coarse_tasks.push_back(ProbabilityTask{tasks[k].head, tasks[k].model, &coarse[k]});
  }
  PredictionStats stats = predict_on_grid(reader, scene, coarse_tasks, params, coarse_region, progress);
  const auto start = std::chrono::steady_clock::now();
  upsample_to_full_grid(reader, scene, ds, tasks, coarse,
                        params.region ? *params.region : PixelWindow{0, 0, scene.width(), scene.height()},
                        coarse_region ? *coarse_region : PixelWindow{0, 0, cw, ch});
  stats.seconds_total += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return stats;
}

PixelWindow chip_read_extent(int width, int height, const ChipPredictionParams& params) {
  const PixelWindow full{0, 0, width, height};
  if (!params.region) return full;
  const int ds = std::max(1, params.downsampling);
  const int cw = width / ds, ch = height / ds;
  const ChipGrid grid(cw, ch, params.window_size, params.overlap);
  const PixelWindow region_on_grid = ds > 1 ? coarse_region_of(*params.region, ds, cw, ch) : *params.region;
  // The union of the chips' read windows on the (decimated) grid, then in full-resolution pixels.
  int x0 = cw, y0 = ch, x1 = 0, y1 = 0;
  for (const int index : grid.chips_meeting(region_on_grid)) {
    const Chip c = grid.chip(index);
    x0 = std::min(x0, c.cols.read_start);
    y0 = std::min(y0, c.rows.read_start);
    x1 = std::max(x1, c.cols.read_end);
    y1 = std::max(y1, c.rows.read_end);
  }
  if (x1 <= x0 || y1 <= y0) return *params.region;
  // With downsampling the full-resolution validity of the region is read too.
  const PixelWindow& r = *params.region;
  x0 = std::min(x0 * ds, r.x0);
  y0 = std::min(y0 * ds, r.y0);
  x1 = std::min(width, std::max(x1 * ds, r.x1()));
  y1 = std::min(height, std::max(y1 * ds, r.y1()));
  return PixelWindow{x0, y0, x1 - x0, y1 - y0};
}

FloatBuffer predict_probability(const RasterReader& scene, InferenceBackend& model, const ProbabilityHead& head,
                                       const ChipPredictionParams& params, const ChipProgress& progress) {
  FloatBuffer probability;
  predict_probabilities(scene, {ProbabilityTask{&head, &model, &probability}}, params, progress);
  return probability;
}

OpDefinition probability_op_definition(const ProbabilityHead& head, const std::string& output_port,
                                       const std::string& farmvibes_root_dir, const std::string& farmvibes_model,
                                       const std::string& default_model, const std::string& short_description) {
  OpDefinition op;
  op.name = head.op_name;
  op.op_dir = head.op_name;
  op.short_description = short_description;
  op.inputs = {{"sentinel_raster", "Sentinel2Raster", "Sentinel-2 L2A raster, 12 bands, nodata 0"}};
  op.outputs = {{output_port, "Sentinel2CloudProbability", "Probability raster, float32, nodata 100"}};
  op.parameters = {
      ParamSpec{"downsampling", ParamType::Int, 1,
                "Run the model on the scene decimated by this factor, probabilities resampled back "
                "bilinearly: about ds^2 times less inference, coarser masks",
                1.0, static_cast<double>(kMaxDownsampling)}
          .affecting_output()
          .tagged("NIMBUS_DOWNSAMPLING"),
      ParamSpec{"root_dir", ParamType::String, farmvibes_root_dir,
                "Directory a relative model_path is looked up in (FarmVibes' model directory)"},
      ParamSpec{"model_path", ParamType::String, default_model,
                fmt::format("ONNX model file (absolute, relative to root_dir, or embedded:<name>); default: Nimbus' "
                            "embedded model; FarmVibes' is {} (in root_dir)",
                            farmvibes_model)}
          .affecting_output(),
      ParamSpec{"window_size", ParamType::Int, 512, "Chip size in pixels",
                static_cast<double>(kMinWindowSize)}
          .affecting_output()
          .tagged("NIMBUS_WINDOW"),
      ParamSpec{"overlap", ParamType::Float, 0.25, "Chip overlap fraction", 0.0,
                1.0 - 1.0 / kMaxChipRedundancy}
          .affecting_output()
          .tagged("NIMBUS_OVERLAP"),
      ParamSpec{"batch_size", ParamType::Int, 1, "Accepted for compatibility; Nimbus runs one chip per forward pass",
                1.0},
      ParamSpec{"num_workers", ParamType::Int, 0, "Accepted for compatibility; reading is handled by Nimbus", 0.0},
      ParamSpec{"in_memory", ParamType::Bool, false, "Read the whole raster once instead of once per chip"},
      // Not in the cache key: FarmVibes' key has no engine, and the engines agree to 1e-4.
      ParamSpec{"engine", ParamType::String, "auto",
                "Inference engine: auto (oneDNN; OpenCV DNN for a graph oneDNN cannot run), onednn or opencv"}
          .one_of({"auto", "onednn", "opencv"}),
  };
  op.output_grid_of = {{output_port, "sentinel_raster"}};
  op.input_checks["sentinel_raster"] = [](const std::string& path, const std::string& role) {
    const RasterReader scene(path, role);
    scene.require_digital_numbers();
    check_band_order(scene);
  };
  const ProbabilityHead* h = &head;
  op.run = [h, output_port](const OpRunContext& ctx) {
    const Json& p = ctx.parameters;
    const long downsampling = p.at("downsampling").get<long>();
    if (downsampling < 1) {
      throw InputError(fmt::format("task '{}': Downsampling must be equal or larger than 1, found {}", ctx.task,
                                   downsampling));
    }
    if (downsampling > kMaxDownsampling) {
      throw InputError(fmt::format("task '{}': downsampling = {}; Nimbus supports 1 to {}", ctx.task, downsampling,
                                   kMaxDownsampling));
    }
    ChipPredictionParams params;
    params.downsampling = static_cast<int>(downsampling);
    params.window_size = static_cast<int>(p.at("window_size").get<long>());
    params.overlap = p.at("overlap").get<double>();
    params.in_memory = p.at("in_memory").get<bool>();
    const std::string role = fmt::format("{} of task '{}' (model_path)", h->op_name, ctx.task);
    const BackendOptions engine{parse_engine(p.at("engine").get<std::string>(),
                                             fmt::format("parameter engine of task '{}'", ctx.task)),
                                0};
    auto model = make_backend(load_model(p.at("model_path").get<std::string>(), p.at("root_dir").get<std::string>(),
                                         role),
                              role, engine);
    const Artifact& input = ctx.inputs.at("sentinel_raster");
    const RasterReader scene(input.path, fmt::format("input sentinel_raster of task '{}'", ctx.task));
    GridInfo grid = scene.grid();
    if (ctx.window) {
      // Only the chips of the full scene's grid the window needs; the output is the window.
      if (input.window || scene.width() != ctx.window->grid_width || scene.height() != ctx.window->grid_height) {
        throw InputError(fmt::format("task '{}' ({}) with a run geometry needs the whole scene as its input "
                                     "sentinel_raster (its chip grid is the scene's); feed it from a source",
                                     ctx.task, h->op_name));
      }
      params.region = ctx.window->pixels;
      grid = window_grid(grid, ctx.window->pixels);
    }
    const CancelCheck& cancel = ctx.cancel;
    const FloatBuffer probability =
        predict_probability(scene, *model, *h, params, [&cancel](int, int) { throw_if_cancelled(cancel); });
    const std::string path = ctx.output_dir + "/" + output_port + ".tif";
    GeoTiffOptions tiff = probability_geotiff_options();
    tiff.cancel = ctx.cancel;
    write_single_band_geotiff(path, fmt::format("output of task '{}'", ctx.task), grid, probability.data(), tiff);
    return OpOutputs{{output_port, Artifact{path, "Sentinel2CloudProbability", ""}}};
  };
  return op;
}

}  // namespace nimbus
