#include "nimbus/raster/raster_reader.h"

#include <algorithm>
#include <cmath>
#include <mutex>

#include <cpl_conv.h>
#include <cpl_error.h>
#include <cpl_vsi.h>
#include <cpl_vsi_error.h>
#include <gdal_priv.h>
#include <ogr_spatialref.h>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "nimbus/core/error.h"
#include "nimbus/core/input_files.h"
#include "nimbus/raster/gdal_handles.h"

namespace nimbus {
namespace {

// GDAL types whose every value converts to float32 exactly, so nodata can be
// compared after the conversion RasterIO already does.
bool converts_exactly_to_float32(GDALDataType type) {
  return type == GDT_Byte || type == GDT_UInt16 || type == GDT_Int16 || type == GDT_Float32;
}

std::string last_gdal_message() {
  const char* msg = CPLGetLastErrorMsg();
  return (msg && *msg) ? std::string(msg) : std::string("no detail from GDAL");
}

// Defaults for GDAL's HTTP options: a connection must open within 20 s and a
// transfer may not stall (under 1 byte/s) for 20 s; transient HTTP errors are retried.
constexpr std::pair<const char*, const char*> kNetworkDefaults[] = {
    {"GDAL_HTTP_CONNECTTIMEOUT", "20"},
    {"GDAL_HTTP_LOW_SPEED_TIME", "20"},
    {"GDAL_HTTP_LOW_SPEED_LIMIT", "1"},
    {"GDAL_HTTP_MAX_RETRY", "2"},
    {"GDAL_HTTP_RETRY_DELAY", "1"},
};

// GDAL decodes whole blocks (tiles or strips), so reading one chip allocates at
// least one block of every band. A header may claim any block size; beyond this
// a single chip read would need gigabytes. A full 10980-pixel tile stored as one
// Float32 strip per band (482 MB) stays below it.
constexpr std::int64_t kMaxBlockBytes = std::int64_t{1} << 30;

// The source of a warped VRT held in /vsimem (how a band is put on the 10 m grid), for
// messages; any other path as given.
std::string warped_vrt_source(const std::string& path) {
  if (path.rfind("/vsimem/", 0) != 0) return path;
  VSILFILE* f = VSIFOpenL(path.c_str(), "rb");
  if (!f) return path;
  std::string xml;
  char buffer[65536];
  for (std::size_t n; (n = VSIFReadL(buffer, 1, sizeof buffer, f)) > 0;) xml.append(buffer, n);
  VSIFCloseL(f);
  const auto tag = xml.find("<SourceDataset");
  const auto open = tag == std::string::npos ? tag : xml.find('>', tag);
  const auto close = open == std::string::npos ? open : xml.find("</SourceDataset>", open);
  if (close == std::string::npos) return path;
  char* unescaped = CPLUnescapeString(xml.substr(open + 1, close - open - 1).c_str(), nullptr, CPLES_XML);
  std::string source = unescaped;
  CPLFree(unescaped);
  return source;
}

// After a failed read of a window of `b` (band number `band`): when the window comes from
// a file read over the network (found through VRTs, e.g. a STAC asset) or GDAL reported a
// network failure, throws InputError naming the file's URL, the cause and the settings that
// govern timeouts and retries (a generic "may be corrupt" would send the user astray).
void throw_if_network_failure(GDALRasterBand* b, int band, int x0, int y0, int w, int h, const std::string& role_,
                              const std::string& path_) {
  std::string network = take_network_failure();
  std::string file;
  if (const char* where = b->GetMetadataItem(fmt::format("Pixel_{}_{}", x0, y0).c_str(), "LocationInfo")) {
    const std::string xml = where;
    const auto open = xml.find("<File>"), close = xml.find("</File>");
    if (open != std::string::npos && close != std::string::npos && close > open) {
      char* unescaped = CPLUnescapeString(xml.substr(open + 6, close - open - 6).c_str(), nullptr, CPLES_XML);
      file = warped_vrt_source(unescaped);
      CPLFree(unescaped);
    }
  }
  if (network.empty() && !is_network_path(file)) return;
  if (const auto at = file.find("&url="); file.rfind("/vsicurl?", 0) == 0 && at != std::string::npos) {
    char* url = CPLUnescapeString(file.c_str() + at + 5, nullptr, CPLES_URL);
    file = url;
    CPLFree(url);
  }
  const char* name = b->GetDescription();
  throw InputError(fmt::format("{} '{}': reading band {}{} window x={} y={} {}x{} over the network failed{} ({}); "
                               "check that the server answers (timeouts: GDAL_HTTP_CONNECTTIMEOUT, "
                               "GDAL_HTTP_LOW_SPEED_TIME; retries: GDAL_HTTP_MAX_RETRY, GDAL_HTTP_RETRY_DELAY)",
                               role_, path_, band, name && *name ? fmt::format(" ({})", name) : "", x0, y0, w, h,
                               file.empty() ? "" : fmt::format(" at '{}'", file),
                               network.empty() ? last_gdal_message() : network));
}

}  // namespace

bool is_network_path(const std::string& path) {
  for (const char* prefix : {"/vsicurl", "/vsis3", "/vsigs", "/vsiaz", "/vsiadls", "/vsioss", "/vsiswift",
                             "/vsiwebhdfs", "/vsihdfs"}) {
    if (path.find(prefix) != std::string::npos) return true;
  }
  return false;
}

void require_network_path_answers(const std::string& path, const std::string& role) {
  if (!is_network_path(path)) return;
  const GdalErrorScope quiet;
  const NetworkTimeoutScope timeouts;
  CPLErrorReset();
  VSIErrorReset();
  VSIStatBufL st;
  if (VSIStatExL(path.c_str(), &st, VSI_STAT_EXISTS_FLAG | VSI_STAT_SET_ERROR_FLAG) == 0) return;
  std::string error = CPLGetLastErrorMsg();
  if (error.empty()) error = VSIGetLastErrorMsg();
  for (const char* symptom : {"CURL error", "timed out", "too slow", "Could not resolve", "Connection refused"}) {
    if (error.find(symptom) != std::string::npos) {
      throw InputError(fmt::format("{} '{}' cannot be read over the network ({}); check the URL and that the server "
                                   "answers (timeouts: GDAL_HTTP_CONNECTTIMEOUT, GDAL_HTTP_LOW_SPEED_TIME)",
                                   role, path, error));
    }
  }
}

NetworkTimeoutScope::NetworkTimeoutScope() {
  for (const auto& [key, value] : kNetworkDefaults) {
    if (CPLGetConfigOption(key, nullptr) != nullptr) continue;  // the user's (or an enclosing scope's) value
    CPLSetThreadLocalConfigOption(key, value);
    set_.push_back(key);
  }
}

NetworkTimeoutScope::~NetworkTimeoutScope() {
  for (const char* key : set_) CPLSetThreadLocalConfigOption(key, nullptr);
}

void ensure_gdal_initialised() {
  static std::once_flag once;
  // Only the drivers: the error handler and the block cache size are the process
  // owner's (see GdalErrorScope and configure_gdal_for_process).
  std::call_once(once, [] { GDALAllRegister(); });
}

RasterReader::RasterReader(std::string path, std::string role) : path_(std::move(path)), role_(std::move(role)) {
  ensure_gdal_initialised();
  const GdalErrorScope quiet;
  require_not_special_file(path_, role_);
  require_network_path_answers(path_, role_);
  const NetworkTimeoutScope timeouts;
  CPLErrorReset();
  dataset_ = adopt_dataset(GDALOpenEx(path_.c_str(), GDAL_OF_RASTER | GDAL_OF_READONLY | GDAL_OF_VERBOSE_ERROR, nullptr,
                                      nullptr, nullptr));
  if (!dataset_) {
    throw InputError(fmt::format("{} '{}' cannot be opened as a raster ({}); {}", role_, path_, last_gdal_message(),
                                 is_network_path(path_)
                                     ? "check the URL and that the server answers (timeouts: GDAL_HTTP_CONNECTTIMEOUT, "
                                       "GDAL_HTTP_LOW_SPEED_TIME)"
                                     : "check the path and that it is a readable GeoTIFF or other GDAL raster"));
  }
  // A VRT (or a dataset with sidecars) opens the files it references only when
  // pixels are read: a FIFO or device among them would block or never end there.
  if (char** files = is_network_path(path_) ? nullptr : dataset_->GetFileList()) {
    try {
      for (int i = 0; files[i]; ++i) {
        if (path_ != files[i]) {
          require_not_special_file(files[i], fmt::format("file referenced by {} '{}':", role_, path_));
        }
      }
    } catch (...) {
      CSLDestroy(files);
      throw;
    }
    CSLDestroy(files);
  }
  band_count_ = dataset_->GetRasterCount();
  if (band_count_ < 1) {
    throw InputError(fmt::format("{} '{}' has no raster bands; pass a raster file", role_, path_));
  }
  bool any_offset = false;
  for (int b = 1; b <= band_count_; ++b) {
    has_float_bands_ = has_float_bands_ || GDALDataTypeIsFloating(dataset_->GetRasterBand(b)->GetRasterDataType());
    const char* v = dataset_->GetRasterBand(b)->GetMetadataItem(kBandOffsetKey);
    band_offsets_.push_back(v ? CPLAtof(v) : 0.0);
    // ESA's offsets are -1000; anything non-finite or beyond the DN range is a damaged tag.
    if (!std::isfinite(band_offsets_.back()) || std::abs(band_offsets_.back()) > 10000.0) {
      const std::string value = v;
      throw InputError(fmt::format("{} '{}': band {} metadata {} = '{}' is not a BOA offset (Sentinel-2 uses -1000); "
                                   "fix or remove the tag (gdal_edit.py), or re-create the stack with nimbus stack-safe",
                                   role_, path_, b, kBandOffsetKey, value));
    }
    any_offset = any_offset || band_offsets_.back() != 0.0;
  }
  if (!any_offset) band_offsets_.clear();
  require_decodable_blocks();
  grid_.width = dataset_->GetRasterXSize();
  grid_.height = dataset_->GetRasterYSize();
  grid_.has_geotransform = dataset_->GetGeoTransform(grid_.geotransform.data()) == CE_None;
  if (const OGRSpatialReference* srs = dataset_->GetSpatialRef()) {
    char* wkt = nullptr;
    if (srs->exportToWkt(&wkt) == OGRERR_NONE && wkt) grid_.crs_wkt = wkt;
    CPLFree(wkt);
  }
}

void RasterReader::require_decodable_blocks() {
  const char* interleave = dataset_->GetMetadataItem("INTERLEAVE", "IMAGE_STRUCTURE");
  const bool pixel_interleaved = interleave != nullptr && EQUAL(interleave, "PIXEL");
  std::int64_t block_bytes_all_bands = 0;
  for (int b = 1; b <= band_count_; ++b) {
    GDALRasterBand* band = dataset_->GetRasterBand(b);
    int block_x = 0, block_y = 0;
    band->GetBlockSize(&block_x, &block_y);
    const std::int64_t bytes = static_cast<std::int64_t>(std::max(block_x, 1)) * std::max(block_y, 1) *
                               std::max(1, GDALGetDataTypeSizeBytes(band->GetRasterDataType()));
    // Pixel-interleaved files keep all bands in one block, decoded together.
    block_bytes_all_bands = pixel_interleaved ? block_bytes_all_bands + bytes : bytes;
    if (block_bytes_all_bands > kMaxBlockBytes) {
      const std::string message = fmt::format(
          "{} '{}' is stored in blocks of {}x{} pixels ({}{} MB to decode for any read), more than the {} MB "
          "Nimbus allows; re-tile it, e.g. gdal_translate -co TILED=YES -co COMPRESS=ZSTD in.tif out.tif",
          role_, path_, block_x, block_y, pixel_interleaved ? "all bands interleaved, " : "",
          block_bytes_all_bands >> 20, kMaxBlockBytes >> 20);
      throw InputError(message);
    }
  }
}

RasterReader::~RasterReader() {
  const GdalErrorScope quiet;
  dataset_.reset();
}

std::string RasterReader::data_type_name() const {
  return GDALGetDataTypeName(dataset_->GetRasterBand(1)->GetRasterDataType());
}

std::optional<double> RasterReader::nodata_value() const {
  int has = 0;
  const double value = dataset_->GetRasterBand(1)->GetNoDataValue(&has);
  return has ? std::optional<double>(value) : std::nullopt;
}

std::string RasterReader::metadata_item(const std::string& key) const {
  const char* value = dataset_->GetMetadataItem(key.c_str());
  return value ? std::string(value) : std::string();
}

std::vector<std::string> RasterReader::band_descriptions() const {
  std::vector<std::string> out;
  for (int b = 1; b <= band_count_; ++b) out.emplace_back(dataset_->GetRasterBand(b)->GetDescription());
  return out;
}

void RasterReader::require_digital_numbers() const {
  const GdalErrorScope quiet;
  for (int b = 1; b <= band_count_; ++b) {
    GDALRasterBand* band = dataset_->GetRasterBand(b);
    const GDALDataType type = band->GetRasterDataType();
    const std::string name = GDALGetDataTypeName(type);
    if (GDALDataTypeIsComplex(type)) {
      throw InputError(fmt::format("{} '{}': band {} is complex ({}); Sentinel-2 L2A bands are real digital numbers, "
                                   "pass the UInt16 L2A stack",
                                   role_, path_, b, name));
    }
    if (GDALGetDataTypeSizeBits(type) <= 8) {
      throw InputError(fmt::format(
          "{} '{}': band {} is 8-bit ({}), which cannot hold Sentinel-2 L2A digital numbers (0-10000 and more); this "
          "looks like a visual (TCI) or rescaled export: pass the 16-bit L2A bands",
          role_, path_, b, name));
    }
    if (GDALDataTypeIsFloating(type)) {
      // Floats are accepted when they hold digital numbers; reflectance in [0, 1] is
      // the usual mistake and would silently give wrong probabilities. Every band is
      // checked (bands may be scaled apart), on the median of its valid non-zero values
      // in a decimated read (overviews when present): a few outliers cannot move it.
      const NetworkTimeoutScope timeouts;
      const double scale = std::max(1.0, std::max(grid_.width, grid_.height) / 256.0);
      const int sw = std::max(1, static_cast<int>(grid_.width / scale));
      const int sh = std::max(1, static_cast<int>(grid_.height / scale));
      std::vector<double> sample(static_cast<std::size_t>(sw) * sh);
      CPLErrorReset();
      if (band->RasterIO(GF_Read, 0, 0, grid_.width, grid_.height, sample.data(), sw, sh, GDT_Float64, 0, 0,
                         nullptr) != CE_None) {
        throw InputError(fmt::format("{} '{}': reading band {} failed ({}); the file may be truncated or corrupt, "
                                     "re-create or re-download it",
                                     role_, path_, b, last_gdal_message()));
      }
      int has_nodata = 0;
      const double nodata = band->GetNoDataValue(&has_nodata);
      std::vector<double> valid;
      valid.reserve(sample.size());
      for (double v : sample) {
        if (std::isfinite(v) && v != 0.0 && !(has_nodata && v == nodata)) valid.push_back(v);
      }
      if (valid.empty()) continue;
      auto middle = valid.begin() + static_cast<std::ptrdiff_t>(valid.size() / 2);
      std::nth_element(valid.begin(), middle, valid.end());
      if (std::abs(*middle) <= 2.0) {
        throw InputError(fmt::format(
            "{} '{}': band {} is {} with a median of {:g} over its valid pixels, which looks like reflectance (0-1); "
            "the models expect L2A digital numbers (reflectance x 10000): scale it, e.g. gdal_calc.py --calc "
            "\"A*10000\" --type UInt16",
            role_, path_, b, name, *middle));
      }
    }
  }
}

void RasterReader::require_product_mask(const std::optional<PixelWindow>& look_first) const {
  const GdalErrorScope quiet;
  if (band_count_ != 1) {
    throw InputError(fmt::format("{} '{}' has {} bands; a product cloud mask has one band (non-zero = cloud): pass the "
                                 "product's mask (e.g. from `nimbus stack-safe --product-mask-out`), not the "
                                 "Sentinel-2 raster",
                                 role_, path_, band_count_));
  }
  GDALRasterBand* band = dataset_->GetRasterBand(1);
  const GDALDataType type = band->GetRasterDataType();
  if (GDALDataTypeIsComplex(type)) {
    throw InputError(fmt::format("{} '{}' is complex ({}); a product cloud mask holds real values (non-zero = cloud)",
                                 role_, path_, GDALGetDataTypeName(type)));
  }
  // A mask that is its own nodata everywhere carries no information, and would read
  // as cloud everywhere; stop at the first pixel that is not nodata.
  int has_nodata = 0;
  const double nodata = band->GetNoDataValue(&has_nodata);
  if (!has_nodata) return;
  const NetworkTimeoutScope timeouts;
  // Whether `w` holds a pixel that is not nodata, read in strips of about 4 M pixels.
  const auto holds_data = [&](const PixelWindow& w) {
    const int rows_per_block = std::max(1, std::min(w.height, static_cast<int>((1 << 22) / std::max(1, w.width))));
    std::vector<double> buffer(static_cast<std::size_t>(w.width) * rows_per_block);
    for (int y = w.y0; y < w.y1(); y += rows_per_block) {
      const int rows = std::min(rows_per_block, w.y1() - y);
      CPLErrorReset();
      take_network_failure();
      if (band->RasterIO(GF_Read, w.x0, y, w.width, rows, buffer.data(), w.width, rows, GDT_Float64, 0, 0,
                         nullptr) != CE_None) {
        throw_if_network_failure(band, 1, w.x0, y, w.width, rows, role_, path_);
        throw InputError(fmt::format("{} '{}': reading rows {}..{} failed ({}); the file may be truncated or corrupt",
                                     role_, path_, y, y + rows, last_gdal_message()));
      }
      const std::size_t n = static_cast<std::size_t>(w.width) * rows;
      for (std::size_t i = 0; i < n; ++i) {
        const double v = buffer[i];
        if (std::isnan(nodata) ? !std::isnan(v) : v != nodata) return true;
      }
    }
    return false;
  };
  if (look_first && !look_first->empty() && holds_data(*look_first)) return;
  if (holds_data(PixelWindow{0, 0, grid_.width, grid_.height})) return;
  throw InputError(fmt::format("{} '{}': every pixel equals its nodata value ({}), so it says nothing about clouds "
                               "(and would read as cloud everywhere); pass the product's real cloud mask, or remove "
                               "the nodata tag if the values are meant (gdal_edit.py -unsetnodata)",
                               role_, path_, nodata));
}

void RasterReader::read_band_window(int band, int x0, int y0, int w, int h, float* data) const {
  const GdalErrorScope quiet;
  const NetworkTimeoutScope timeouts;
  CPLErrorReset();
  take_network_failure();
  GDALRasterBand* b = dataset_->GetRasterBand(band);
  if (b->RasterIO(GF_Read, x0, y0, w, h, data, w, h, GDT_Float32, 0, 0, nullptr) != CE_None) {
    throw_if_network_failure(b, band, x0, y0, w, h, role_, path_);
    throw InputError(fmt::format("{} '{}': reading band {} window x={} y={} {}x{} failed ({}); the file may be "
                                 "truncated or corrupt, re-create or re-download it",
                                 role_, path_, band, x0, y0, w, h, last_gdal_message()));
  }
}

std::size_t RasterReader::read_window(int x0, int y0, int w, int h, float* data, std::uint8_t* invalid) const {
  const GdalErrorScope quiet;
  const std::size_t npix = static_cast<std::size_t>(w) * static_cast<std::size_t>(h);
  std::fill(invalid, invalid + npix, std::uint8_t{0});
  std::vector<std::uint8_t> mask_buffer;
  for (int b = 1; b <= band_count_; ++b) {
    float* plane = data + static_cast<std::size_t>(b - 1) * npix;
    read_band_window(b, x0, y0, w, h, plane);
    GDALRasterBand* band = dataset_->GetRasterBand(b);
    int has_nodata = 0;
    const double nodata = band->GetNoDataValue(&has_nodata);
    if (has_nodata && converts_exactly_to_float32(band->GetRasterDataType())) {
      if (std::isnan(nodata)) {
        for (std::size_t i = 0; i < npix; ++i) invalid[i] |= std::isnan(plane[i]) ? 1 : 0;
      } else {
        const float nd = static_cast<float>(nodata);
        for (std::size_t i = 0; i < npix; ++i) invalid[i] |= (plane[i] == nd) ? 1 : 0;
      }
      continue;
    }
    if (band->GetMaskFlags() & GMF_ALL_VALID) continue;
    // Nodata in a wide type, a per-dataset mask or alpha: GDAL's mask band
    // compares in the native type and covers all three.
    mask_buffer.resize(npix);
    CPLErrorReset();
    if (band->GetMaskBand()->RasterIO(GF_Read, x0, y0, w, h, mask_buffer.data(), w, h, GDT_Byte, 0, 0, nullptr) !=
        CE_None) {
      throw InputError(fmt::format("{} '{}': reading the validity mask of band {} failed ({}); the file may be "
                                   "corrupt",
                                   role_, path_, b, last_gdal_message()));
    }
    for (std::size_t i = 0; i < npix; ++i) invalid[i] |= (mask_buffer[i] == 0) ? 1 : 0;
  }
  if (has_float_bands_) {
    // FarmVibes feeds nodata pixels' raw values to the model; a non-finite one would
    // turn the whole chip's output into NaN, so those become 0. At a valid pixel a
    // NaN or inf is an input problem.
    for (int b = 0; b < band_count_; ++b) {
      float* plane = data + static_cast<std::size_t>(b) * npix;
      for (std::size_t i = 0; i < npix; ++i) {
        if (std::isfinite(plane[i])) continue;
        if (invalid[i]) {
          plane[i] = 0.0f;
          continue;
        }
        throw InputError(fmt::format("{} '{}': band {} holds {} at pixel x={} y={}, which is not marked as nodata; "
                                     "declare the nodata value (e.g. gdal_edit.py -a_nodata nan) or fill the gaps",
                                     role_, path_, b + 1, plane[i], x0 + static_cast<int>(i % static_cast<std::size_t>(w)),
                                     y0 + static_cast<int>(i / static_cast<std::size_t>(w))));
      }
    }
  }
  for (std::size_t b = 0; b < band_offsets_.size() && b < static_cast<std::size_t>(band_count_); ++b) {
    const float offset = static_cast<float>(band_offsets_[b]);
    if (offset == 0.0f) continue;
    float* plane = data + b * npix;
    for (std::size_t i = 0; i < npix; ++i) {
      if (!invalid[i]) plane[i] = std::max(plane[i] + offset, 0.0f);
    }
  }
  std::size_t count = 0;
  for (std::size_t i = 0; i < npix; ++i) count += invalid[i];
  return count;
}

void RasterReader::read_band_resampled(int band, int out_w, int out_h, float* data) const {
  read_band_resampled(band, PixelWindow{0, 0, grid_.width, grid_.height}, out_w, out_h, data);
}

void RasterReader::read_band_resampled(int band, const PixelWindow& window, int out_w, int out_h,
                                       float* data) const {
  const GdalErrorScope quiet;
  if (window.empty() || window.x0 < 0 || window.y0 < 0 || window.x1() > grid_.width || window.y1() > grid_.height) {
    throw InternalError(fmt::format("window {} lies outside the {}x{} raster", window.text(), grid_.width,
                                    grid_.height));
  }
  const NetworkTimeoutScope timeouts;
  CPLErrorReset();
  GDALRasterBand* b = dataset_->GetRasterBand(band);
  if (b->RasterIO(GF_Read, window.x0, window.y0, window.width, window.height, data, out_w, out_h, GDT_Float32, 0, 0,
                  nullptr) !=
      CE_None) {
    throw InputError(fmt::format("{} '{}': reading band {} at {}x{} failed ({}); the file may be truncated or corrupt",
                                 role_, path_, band, out_w, out_h, last_gdal_message()));
  }
}

FloatBuffer RasterReader::read_band(int band) const {
  FloatBuffer out(static_cast<std::size_t>(grid_.width) * static_cast<std::size_t>(grid_.height));
  read_band_window(band, 0, 0, grid_.width, grid_.height, out.data());
  return out;
}

MaskBuffer RasterReader::read_band_nonzero(int band) const {
  return read_band_nonzero(band, PixelWindow{0, 0, grid_.width, grid_.height});
}

MaskBuffer RasterReader::read_band_nonzero(int band, const PixelWindow& window) const {
  const GdalErrorScope quiet;
  if (window.empty() || window.x0 < 0 || window.y0 < 0 || window.x1() > grid_.width || window.y1() > grid_.height) {
    throw InternalError(fmt::format("window {} lies outside the {}x{} raster", window.text(), grid_.width,
                                    grid_.height));
  }
  const std::size_t w = static_cast<std::size_t>(window.width);
  MaskBuffer out(w * static_cast<std::size_t>(window.height));
  GDALRasterBand* b = dataset_->GetRasterBand(band);
  const NetworkTimeoutScope timeouts;
  // Rows in blocks, read as float64 so no integer or float value collapses to 0.
  const int rows_per_block = 256;
  std::vector<double> buffer(w * rows_per_block);
  for (int y = 0; y < window.height; y += rows_per_block) {
    const int rows = std::min(rows_per_block, window.height - y);
    CPLErrorReset();
    take_network_failure();
    if (b->RasterIO(GF_Read, window.x0, window.y0 + y, window.width, rows, buffer.data(), window.width, rows,
                    GDT_Float64, 0, 0, nullptr) != CE_None) {
      throw_if_network_failure(b, band, window.x0, window.y0 + y, window.width, rows, role_, path_);
      throw InputError(fmt::format("{} '{}': reading band {} rows {}..{} failed ({}); the file may be truncated or "
                                   "corrupt",
                                   role_, path_, band, window.y0 + y, window.y0 + y + rows, last_gdal_message()));
    }
    std::uint8_t* dst = out.data() + static_cast<std::size_t>(y) * w;
    const std::size_t n = w * static_cast<std::size_t>(rows);
    for (std::size_t i = 0; i < n; ++i) dst[i] = buffer[i] != 0.0 ? 1 : 0;
  }
  return out;
}

void require_same_grid(const RasterReader& a, const RasterReader& b) {
  const GdalErrorScope quiet;
  const GridInfo& ga = a.grid();
  const GridInfo& gb = b.grid();
  const auto describe = [&](const std::string& what, const std::string& va, const std::string& vb) {
    return InputError(fmt::format("{} '{}' and {} '{}' are on different grids: {} {} vs {}; resample one onto the "
                                  "other's grid (e.g. gdalwarp -te/-tr/-t_srs) so they match pixel for pixel",
                                  a.role(), a.path(), b.role(), b.path(), what, va, vb));
  };
  if (ga.width != gb.width || ga.height != gb.height) {
    throw describe("size", fmt::format("{}x{}", ga.width, ga.height), fmt::format("{}x{}", gb.width, gb.height));
  }
  if (ga.has_geotransform && gb.has_geotransform) {
    for (int i = 0; i < 6; ++i) {
      const double tol = 1e-9 * std::max({1.0, std::abs(ga.geotransform[i]), std::abs(gb.geotransform[i])});
      if (std::abs(ga.geotransform[i] - gb.geotransform[i]) > tol) {
        throw describe("geotransform", fmt::format("[{}]", fmt::join(ga.geotransform, ", ")),
                       fmt::format("[{}]", fmt::join(gb.geotransform, ", ")));
      }
    }
  } else if (ga.has_geotransform != gb.has_geotransform) {
    throw describe("georeferencing", ga.has_geotransform ? "present" : "missing",
                   gb.has_geotransform ? "present" : "missing");
  }
  if (!ga.crs_wkt.empty() && !gb.crs_wkt.empty()) {
    OGRSpatialReference sa, sb;
    sa.importFromWkt(ga.crs_wkt.c_str());
    sb.importFromWkt(gb.crs_wkt.c_str());
    if (!sa.IsSame(&sb)) {
      const char* na = sa.GetName();
      const char* nb = sb.GetName();
      throw describe("CRS", na ? na : "?", nb ? nb : "?");
    }
  } else if (ga.crs_wkt.empty() != gb.crs_wkt.empty()) {
    throw describe("CRS", ga.crs_wkt.empty() ? "missing" : "present", gb.crs_wkt.empty() ? "missing" : "present");
  }
}

}  // namespace nimbus
