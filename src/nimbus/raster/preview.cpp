#include "nimbus/raster/preview.h"

#include <algorithm>
#include <cmath>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <fmt/format.h>

#include "nimbus/core/error.h"
#include "nimbus/raster/atomic_output.h"

namespace nimbus {
namespace {

// Nodata hatch: diagonal stripes, kHatchWidth pixels wide, of two neutral greys.
constexpr int kHatchWidth = 4;
constexpr std::uint8_t kHatchLight = 150;
constexpr std::uint8_t kHatchDark = 110;

// Maps the 2nd..98th percentile of non-zero values to 0..255.
cv::Mat stretch_to_byte(const cv::Mat& band) {
  std::vector<float> values;
  values.reserve(band.total());
  for (auto it = band.begin<float>(); it != band.end<float>(); ++it) {
    if (*it > 0.0f && std::isfinite(*it)) values.push_back(*it);
  }
  float lo = 0.0f, hi = 1.0f;
  if (!values.empty()) {
    const auto at = [&](double q) {
      auto nth = values.begin() + static_cast<std::ptrdiff_t>(q * static_cast<double>(values.size() - 1));
      std::nth_element(values.begin(), nth, values.end());
      return *nth;
    };
    lo = at(0.02);
    hi = std::max(at(0.98), lo + 1.0f);
  }
  cv::Mat out;
  band.convertTo(out, CV_8U, 255.0 / (hi - lo), -lo * 255.0 / (hi - lo));
  return out;
}

}  // namespace

void write_mask_preview(const RasterReader& scene, const MaskBuffer& mask, const MaskBuffer& nodata,
                        const std::string& path, int max_size) {
  write_mask_preview(scene, PixelWindow{0, 0, scene.width(), scene.height()}, mask, nodata, path, max_size);
}

void write_mask_preview(const RasterReader& scene, const PixelWindow& window, const MaskBuffer& given_mask,
                        const MaskBuffer& given_nodata, const std::string& path, int max_size) {
  const std::size_t npix = static_cast<std::size_t>(window.width) * static_cast<std::size_t>(window.height);
  if (given_mask.size() != npix || given_nodata.size() != npix) {
    throw InternalError("preview mask or nodata has the wrong size");
  }
  // Mask nodata (100, outside a cropped area of interest) is drawn as nodata.
  MaskBuffer mask_storage, nodata_storage;
  const bool has_mask_nodata = std::any_of(given_mask.begin(), given_mask.end(), [](std::uint8_t v) { return v > 1; });
  if (has_mask_nodata) {
    mask_storage.resize(npix);
    nodata_storage.resize(npix);
    for (std::size_t i = 0; i < npix; ++i) {
      mask_storage[i] = given_mask[i] == 1 ? 1 : 0;
      nodata_storage[i] = given_mask[i] > 1 || given_nodata[i] ? 1 : 0;
    }
  }
  const MaskBuffer& mask = has_mask_nodata ? mask_storage : given_mask;
  const MaskBuffer& nodata = has_mask_nodata ? nodata_storage : given_nodata;
  const double scale = std::min(1.0, static_cast<double>(max_size) / std::max(window.width, window.height));
  const int w = std::max(1, static_cast<int>(std::lround(window.width * scale)));
  const int h = std::max(1, static_cast<int>(std::lround(window.height * scale)));

  // B02, B03, B04 in OpenCV's BGR order.
  const int bands_bgr[3] = {2, 3, 4};
  std::vector<cv::Mat> channels;
  for (int i = 0; i < 3; ++i) {
    const int band = scene.band_count() >= 4 ? bands_bgr[i] : 1;
    cv::Mat plane(h, w, CV_32F);
    scene.read_band_resampled(band, window, w, h, plane.ptr<float>());
    channels.push_back(stretch_to_byte(plane));
  }
  cv::Mat rgb;
  cv::merge(channels, rgb);

  cv::Mat full_mask(window.height, window.width, CV_8U, const_cast<std::uint8_t*>(mask.data()));
  cv::Mat coverage;
  cv::resize(full_mask, coverage, cv::Size(w, h), 0, 0, cv::INTER_AREA);
  // Nodata pixels are in the mask (their probability is nodata, which passes any
  // threshold), but tinting them would make a half-empty swath look like one huge
  // cloud: they are drawn as a grey hatch instead, whatever the mask says.
  cv::Mat full_nodata(window.height, window.width, CV_8U, const_cast<std::uint8_t*>(nodata.data()));
  cv::Mat nodata_share;  // 0/1 averaged over each preview pixel's footprint and rounded: 1 = mostly nodata
  cv::resize(full_nodata, nodata_share, cv::Size(w, h), 0, 0, cv::INTER_AREA);
  const cv::Vec3b tint(255, 0, 255);
  for (int r = 0; r < h; ++r) {
    for (int c = 0; c < w; ++c) {
      cv::Vec3b& px = rgb.at<cv::Vec3b>(r, c);
      if (nodata_share.at<std::uint8_t>(r, c) != 0) {
        const std::uint8_t grey = ((r + c) / kHatchWidth) % 2 == 0 ? kHatchLight : kHatchDark;
        px = cv::Vec3b(grey, grey, grey);
        continue;
      }
      if (coverage.at<std::uint8_t>(r, c) == 0) continue;
      for (int k = 0; k < 3; ++k) px[k] = static_cast<std::uint8_t>((3 * px[k] + 2 * tint[k]) / 5);
    }
  }
  std::vector<uchar> png;
  bool encoded = false;
  try {
    encoded = cv::imencode(".png", rgb, png, {cv::IMWRITE_PNG_COMPRESSION, 6});
  } catch (const cv::Exception&) {
    encoded = false;
  }
  if (!encoded) throw InternalError(fmt::format("PNG encoding of the preview '{}' failed", path));
  write_whole_file(path, "preview PNG (@[preview])", std::string(png.begin(), png.end()));
}

}  // namespace nimbus
