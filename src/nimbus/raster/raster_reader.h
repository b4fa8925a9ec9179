// Reading rasters through GDAL: chips of a multi-band scene and whole single bands.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "nimbus/core/large_buffer.h"
#include "nimbus/tiling/pixel_window.h"
#include "nimbus/raster/gdal_handles.h"

class GDALDataset;

namespace nimbus {

// Where a raster sits on the earth: size, affine transform and CRS.
struct GridInfo {
  int width = 0;
  int height = 0;
  std::array<double, 6> geotransform{0, 1, 0, 0, 0, 1};
  bool has_geotransform = false;
  std::string crs_wkt;  // empty when the file has no CRS
};

// An open raster. Not thread-safe (GDAL datasets are not): open one per thread.
inline constexpr const char* kBandOffsetKey = "NIMBUS_BOA_ADD_OFFSET";

class RasterReader {
 public:
  // `role` says what the file is for (e.g. "Sentinel-2 raster (--s2-raster)")
  // so errors can name both the file and the option that supplied it.
  RasterReader(std::string path, std::string role);
  ~RasterReader();
  RasterReader(const RasterReader&) = delete;
  RasterReader& operator=(const RasterReader&) = delete;

  const std::string& path() const { return path_; }
  const std::string& role() const { return role_; }
  int width() const { return grid_.width; }
  int height() const { return grid_.height; }
  int band_count() const { return band_count_; }
  const GridInfo& grid() const { return grid_; }
  // GDAL's name of band 1's data type, e.g. "UInt16".
  std::string data_type_name() const;
  // Band 1's declared nodata value, if any.
  std::optional<double> nodata_value() const;
  // The dataset's metadata item `key` (default domain), empty when absent.
  std::string metadata_item(const std::string& key) const;
  // Each band's description (GDAL band description, e.g. "B02"), empty where none.
  std::vector<std::string> band_descriptions() const;

  // Additive DN offsets per band (Sentinel-2 BOA_ADD_OFFSET), applied by
  // read_window to valid pixels, clamped at 0. Taken from the band metadata
  // item kBandOffsetKey, which Nimbus' SAFE stacks carry.
  const std::vector<double>& band_offsets() const { return band_offsets_; }

  // Reads the window [x0, x0+w) x [y0, y0+h) of every band as float32 into
  // `data` (band-major, band_count*w*h values) and sets invalid[i] = 1 where any
  // band is nodata at pixel i (the file's nodata value, else its GDAL mask).
  // Non-finite values (NaN, inf) at nodata pixels become 0, so none reaches a model;
  // at a valid pixel they throw InputError naming the band and pixel.
  // Returns the number of invalid pixels.
  std::size_t read_window(int x0, int y0, int w, int h, float* data, std::uint8_t* invalid) const;

  // Reads the window of one band (1-based) as float32.
  void read_band_window(int band, int x0, int y0, int w, int h, float* data) const;

  // Whole band (1-based) decimated by GDAL (nearest) to out_w x out_h, float32.
  void read_band_resampled(int band, int out_w, int out_h, float* data) const;
  // The same for a window of the band.
  void read_band_resampled(int band, const PixelWindow& window, int out_w, int out_h, float* data) const;

  // Whole band (1-based) as float32, row-major.
  FloatBuffer read_band(int band) const;

  // out[i] = 1 where the band's raw value is non-zero. Compared in the band's
  // own value range, so e.g. a uint16 value of 256 is non-zero.
  MaskBuffer read_band_nonzero(int band) const;
  // The same for a window of the raster (row-major, window.width x window.height).
  MaskBuffer read_band_nonzero(int band, const PixelWindow& window) const;

  // Input policy for Sentinel-2 scenes: integer bands wider than 8 bits are digital
  // numbers; 8-bit and complex bands are refused; floating-point bands are accepted
  // unless their values look like reflectance (the median of a band's valid, non-zero
  // values <= 2, so outliers cannot hide it). Throws InputError naming the file, the
  // band and the conversion to do.
  void require_digital_numbers() const;

  // Checks for a product cloud mask (non-zero = cloud): one band, real values, and
  // not nodata everywhere (which would read as cloud everywhere). Throws InputError
  // naming the file, what is wrong and the fix. `look_first`: the pixels searched
  // first for one that is not nodata (the ones a run reads), so a valid mask is
  // accepted without reading the rest of it.
  void require_product_mask(const std::optional<PixelWindow>& look_first = std::nullopt) const;

 private:
  // Throws InputError when a block is too large to decode.
  void require_decodable_blocks();

  std::string path_;
  std::string role_;
  GdalDatasetPtr dataset_;
  int band_count_ = 0;
  GridInfo grid_;
  std::vector<double> band_offsets_;
  bool has_float_bands_ = false;
};

// Whether a GDAL path reads over the network (/vsicurl/, /vsis3/, ...).
bool is_network_path(const std::string& path);

// For a network path, one request up front: throws InputError naming the URL when the
// server cannot be reached or does not answer in time (rather than once per request
// GDAL would make). Other paths, and files merely missing, pass.
void require_network_path_answers(const std::string& path, const std::string& role);

// GDAL network paths (/vsicurl/, /vsis3/, ...) by default wait for ever on a server
// that accepts and never answers. While alive, sets on the calling thread the
// connect / stall timeouts and retries the user has not set (their GDAL config
// options and environment win), and restores them on destruction.
class NetworkTimeoutScope {
 public:
  NetworkTimeoutScope();
  ~NetworkTimeoutScope();
  NetworkTimeoutScope(const NetworkTimeoutScope&) = delete;
  NetworkTimeoutScope& operator=(const NetworkTimeoutScope&) = delete;

 private:
  std::vector<const char*> set_;
};

// Throws InputError unless both rasters have the same size, geotransform and CRS,
// naming both files and what differs.
void require_same_grid(const RasterReader& a, const RasterReader& b);

// Registers GDAL's drivers once; changes nothing else in the process.
void ensure_gdal_initialised();

}  // namespace nimbus
