#include "nimbus/raster/raster_reader.h"

#include <algorithm>
#include <cmath>
#include <mutex>

#include <cpl_conv.h>
#include <cpl_error.h>
#include <gdal_priv.h>
#include <ogr_spatialref.h>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include "nimbus/core/error.h"

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

void quiet_gdal_handler(CPLErr level, CPLErrorNum, const char* msg) {
  // GDAL failures are turned into exceptions with context at the call site;
  // here we only keep the detail for debugging.
  if (level >= CE_Warning) spdlog::debug("GDAL: {}", msg);
}

}  // namespace

void ensure_gdal_initialised() {
  static std::once_flag once;
  std::call_once(once, [] {
    GDALAllRegister();
    CPLSetErrorHandler(quiet_gdal_handler);
    // GDAL's block cache defaults to 5 % of RAM (1.2 GB here). Chips of one row
    // share at most two block rows, so 256 MB keeps re-reads rare and memory
    // bounded; GDAL_CACHEMAX still overrides.
    if (!CPLGetConfigOption("GDAL_CACHEMAX", nullptr)) GDALSetCacheMax64(static_cast<GIntBig>(256) << 20);
  });
}

RasterReader::RasterReader(std::string path, std::string role) : path_(std::move(path)), role_(std::move(role)) {
  ensure_gdal_initialised();
  CPLErrorReset();
  dataset_ = static_cast<GDALDataset*>(GDALOpenEx(path_.c_str(), GDAL_OF_RASTER | GDAL_OF_READONLY | GDAL_OF_VERBOSE_ERROR,
                                                  nullptr, nullptr, nullptr));
  if (!dataset_) {
    throw InputError(fmt::format("{} '{}' cannot be opened as a raster ({}); check the path and that it is a "
                                 "readable GeoTIFF or other GDAL raster",
                                 role_, path_, last_gdal_message()));
  }
  band_count_ = dataset_->GetRasterCount();
  if (band_count_ < 1) {
    GDALClose(dataset_);
    dataset_ = nullptr;
    throw InputError(fmt::format("{} '{}' has no raster bands; pass a raster file", role_, path_));
  }
  bool any_offset = false;
  for (int b = 1; b <= band_count_; ++b) {
    const char* v = dataset_->GetRasterBand(b)->GetMetadataItem(kBandOffsetKey);
    band_offsets_.push_back(v ? CPLAtof(v) : 0.0);
    any_offset = any_offset || band_offsets_.back() != 0.0;
  }
  if (!any_offset) band_offsets_.clear();
  grid_.width = dataset_->GetRasterXSize();
  grid_.height = dataset_->GetRasterYSize();
  grid_.has_geotransform = dataset_->GetGeoTransform(grid_.geotransform.data()) == CE_None;
  if (const OGRSpatialReference* srs = dataset_->GetSpatialRef()) {
    char* wkt = nullptr;
    if (srs->exportToWkt(&wkt) == OGRERR_NONE && wkt) grid_.crs_wkt = wkt;
    CPLFree(wkt);
  }
}

RasterReader::~RasterReader() {
  if (dataset_) GDALClose(dataset_);
}

std::string RasterReader::data_type_name() const {
  return GDALGetDataTypeName(dataset_->GetRasterBand(1)->GetRasterDataType());
}

std::optional<double> RasterReader::nodata_value() const {
  int has = 0;
  const double value = dataset_->GetRasterBand(1)->GetNoDataValue(&has);
  return has ? std::optional<double>(value) : std::nullopt;
}

void RasterReader::require_digital_numbers() const {
  bool float_values_checked = false;
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
    if (GDALDataTypeIsFloating(type) && !float_values_checked) {
      // Floats are accepted when they hold digital numbers; reflectance in [0, 1] is
      // the usual mistake and would silently give wrong probabilities. One band tells
      // (a stack is scaled as a whole), and an approximate max reads an overview if any.
      float_values_checked = true;
      double min_max[2] = {0, 0};
      CPLErrorReset();
      if (band->ComputeRasterMinMax(TRUE, min_max) == CE_None && min_max[1] <= 2.0) {
        throw InputError(fmt::format(
            "{} '{}': band {} is {} with values up to {:g}, which looks like reflectance (0-1); the models expect L2A "
            "digital numbers (reflectance x 10000): scale it, e.g. gdal_calc.py --calc \"A*10000\" --type UInt16",
            role_, path_, b, name, min_max[1]));
      }
    }
  }
}

void RasterReader::read_band_window(int band, int x0, int y0, int w, int h, float* data) const {
  CPLErrorReset();
  GDALRasterBand* b = dataset_->GetRasterBand(band);
  if (b->RasterIO(GF_Read, x0, y0, w, h, data, w, h, GDT_Float32, 0, 0, nullptr) != CE_None) {
    throw InputError(fmt::format("{} '{}': reading band {} window x={} y={} {}x{} failed ({}); the file may be "
                                 "truncated or corrupt, re-create or re-download it",
                                 role_, path_, band, x0, y0, w, h, last_gdal_message()));
  }
}

std::size_t RasterReader::read_window(int x0, int y0, int w, int h, float* data, std::uint8_t* invalid) const {
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
  CPLErrorReset();
  GDALRasterBand* b = dataset_->GetRasterBand(band);
  if (b->RasterIO(GF_Read, 0, 0, grid_.width, grid_.height, data, out_w, out_h, GDT_Float32, 0, 0, nullptr) !=
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
  const std::size_t w = static_cast<std::size_t>(grid_.width);
  MaskBuffer out(w * static_cast<std::size_t>(grid_.height));
  GDALRasterBand* b = dataset_->GetRasterBand(band);
  // Rows in blocks, read as float64 so no integer or float value collapses to 0.
  const int rows_per_block = 256;
  std::vector<double> buffer(w * rows_per_block);
  for (int y = 0; y < grid_.height; y += rows_per_block) {
    const int rows = std::min(rows_per_block, grid_.height - y);
    CPLErrorReset();
    if (b->RasterIO(GF_Read, 0, y, grid_.width, rows, buffer.data(), grid_.width, rows, GDT_Float64, 0, 0, nullptr) !=
        CE_None) {
      throw InputError(fmt::format("{} '{}': reading band {} rows {}..{} failed ({}); the file may be truncated or "
                                   "corrupt",
                                   role_, path_, band, y, y + rows, last_gdal_message()));
    }
    std::uint8_t* dst = out.data() + static_cast<std::size_t>(y) * w;
    const std::size_t n = w * static_cast<std::size_t>(rows);
    for (std::size_t i = 0; i < n; ++i) dst[i] = buffer[i] != 0.0 ? 1 : 0;
  }
  return out;
}

void require_same_grid(const RasterReader& a, const RasterReader& b) {
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
