#include "nimbus/raster/preview.h"

#include <algorithm>
#include <cmath>
#include <filesystem>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <fmt/format.h>

#include "nimbus/core/error.h"
#include "nimbus/raster/area_of_interest.h"

namespace nimbus {
namespace {

constexpr int kHatchWidth = 4;  // nodata hatch: diagonal stripes this many pixels wide

// Legend strip: rows of swatch + label entries, wrapped to the image's width.
constexpr int kLegendRowHeight = 18;
constexpr int kLegendSwatch = 12;
constexpr int kLegendPadding = 6;
const cv::Vec3b kLegendBackground(40, 40, 40);  // BGR
constexpr double kLegendFontScale = 0.4;

cv::Vec3b bgr(const std::array<std::uint8_t, 3>& rgb) { return cv::Vec3b(rgb[2], rgb[1], rgb[0]); }

std::uint8_t hatch_grey(int r, int c) { return ((r + c) / kHatchWidth) % 2 == 0 ? kPreviewHatchLight : kPreviewHatchDark; }

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

// `classes` == which, as a w x h plane averaged over each preview pixel's footprint:
// 0/1 rounded (`binary`) or 0..255 (the share).
cv::Mat class_plane(const MaskBuffer& classes, const PixelWindow& window, int w, int h,
                    const std::vector<std::uint8_t>& which, std::uint8_t on) {
  cv::Mat full(window.height, window.width, CV_8U);
  std::uint8_t* p = full.ptr<std::uint8_t>();
  for (std::size_t i = 0; i < classes.size(); ++i) {
    p[i] = std::find(which.begin(), which.end(), classes[i]) != which.end() ? on : 0;
  }
  cv::Mat scaled;
  cv::resize(full, scaled, cv::Size(w, h), 0, 0, cv::INTER_AREA);
  return scaled;
}

// The legend strip below a w-pixel-wide image: returns the strip (BGR).
cv::Mat legend_strip(int w) {
  struct Entry {
    const char* label;
    int kind;  // 0 cloud, 1 shadow, 2 no data
  };
  const Entry entries[] = {{"cloud", 0}, {"shadow", 1}, {"no data", 2}};
  // Lay entries out left to right, wrapping when the next does not fit.
  std::vector<cv::Point> origins;
  int x = kLegendPadding, row = 0;
  for (const Entry& e : entries) {
    int baseline = 0;
    const int text = cv::getTextSize(e.label, cv::FONT_HERSHEY_SIMPLEX, kLegendFontScale, 1, &baseline).width;
    const int width = kLegendSwatch + 4 + text + 2 * kLegendPadding;
    if (x > kLegendPadding && x + width > w) {
      x = kLegendPadding;
      ++row;
    }
    origins.emplace_back(x, row * kLegendRowHeight);
    x += width;
  }
  cv::Mat strip(kLegendRowHeight * (row + 1), w, CV_8UC3, cv::Scalar(kLegendBackground));
  for (std::size_t k = 0; k < origins.size(); ++k) {
    const int sx = origins[k].x, sy = origins[k].y + (kLegendRowHeight - kLegendSwatch) / 2;
    for (int r = 0; r < kLegendSwatch; ++r) {
      for (int c = 0; c < kLegendSwatch; ++c) {
        if (sy + r >= strip.rows || sx + c >= strip.cols) continue;
        cv::Vec3b& px = strip.at<cv::Vec3b>(sy + r, sx + c);
        if (entries[k].kind == 0) px = bgr(kPreviewCloudRgb);
        else if (entries[k].kind == 1) px = bgr(kPreviewShadowRgb);
        else px = cv::Vec3b::all(hatch_grey(r, c));
      }
    }
    cv::putText(strip, entries[k].label, cv::Point(sx + kLegendSwatch + 4, origins[k].y + kLegendRowHeight - 5),
                cv::FONT_HERSHEY_SIMPLEX, kLegendFontScale, cv::Scalar(255, 255, 255), 1, cv::LINE_AA);
  }
  return strip;
}

std::string xml_escaped(const std::string& text) {
  std::string out;
  for (char c : text) {
    if (c == '&') out += "&amp;";
    else if (c == '<') out += "&lt;";
    else if (c == '>') out += "&gt;";
    else out += c;
  }
  return out;
}

}  // namespace

Preview render_mask_preview(const RasterReader& scene, const PixelWindow& window, const MaskBuffer& classes,
                            int max_size) {
  const std::size_t npix = static_cast<std::size_t>(window.width) * static_cast<std::size_t>(window.height);
  if (classes.size() != npix) throw InternalError("preview classes have the wrong size");
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

  // Nodata pixels are in the mask (FarmVibes writes them as 1), but tinting them
  // would make a half-empty swath look like one huge cloud: they are hatched instead.
  const cv::Mat nodata = class_plane(classes, window, w, h, {kPreviewNodata}, 1);              // rounded share
  const cv::Mat masked = class_plane(classes, window, w, h, {kPreviewCloud, kPreviewShadow}, 1);
  const cv::Mat cloud_share = class_plane(classes, window, w, h, {kPreviewCloud}, 255);
  const cv::Mat shadow_share = class_plane(classes, window, w, h, {kPreviewShadow}, 255);
  const cv::Vec3b cloud_tint = bgr(kPreviewCloudRgb), shadow_tint = bgr(kPreviewShadowRgb);
  for (int r = 0; r < h; ++r) {
    for (int c = 0; c < w; ++c) {
      cv::Vec3b& px = rgb.at<cv::Vec3b>(r, c);
      if (nodata.at<std::uint8_t>(r, c) != 0) {
        px = cv::Vec3b::all(hatch_grey(r, c));
        continue;
      }
      if (masked.at<std::uint8_t>(r, c) == 0) continue;
      const bool shadow = shadow_share.at<std::uint8_t>(r, c) > cloud_share.at<std::uint8_t>(r, c);
      const cv::Vec3b& tint = shadow ? shadow_tint : cloud_tint;
      for (int k = 0; k < 3; ++k) px[k] = static_cast<std::uint8_t>((3 * px[k] + 2 * tint[k]) / 5);
    }
  }
  const cv::Mat legend = legend_strip(w);
  cv::Mat image;
  cv::vconcat(rgb, legend, image);

  Preview preview;
  preview.image_width = w;
  preview.image_height = h;
  preview.legend_height = legend.rows;
  preview.grid = window_grid(scene.grid(), window);
  preview.grid.width = w;
  preview.grid.height = h;
  auto& gt = preview.grid.geotransform;
  const double sx = static_cast<double>(window.width) / w, sy = static_cast<double>(window.height) / h;
  gt[1] *= sx;
  gt[4] *= sx;
  gt[2] *= sy;
  gt[5] *= sy;
  std::vector<uchar> png;
  bool encoded = false;
  try {
    encoded = cv::imencode(".png", image, png, {cv::IMWRITE_PNG_COMPRESSION, 6});
  } catch (const cv::Exception&) {
    encoded = false;
  }
  if (!encoded) throw InternalError("PNG encoding of the preview failed");
  preview.png.assign(png.begin(), png.end());
  return preview;
}

std::string world_file_text(const GridInfo& grid) {
  const auto& gt = grid.geotransform;
  // The centre of the top-left pixel, where GDAL's transform names its corner.
  return fmt::format("{}\n{}\n{}\n{}\n{}\n{}\n", gt[1], gt[4], gt[2], gt[5], gt[0] + 0.5 * gt[1] + 0.5 * gt[2],
                     gt[3] + 0.5 * gt[4] + 0.5 * gt[5]);
}

std::string world_file_path(const std::string& png_path) {
  std::filesystem::path p(png_path);
  const std::string ext = p.extension().string();
  if (ext.size() == 4) return p.replace_extension(std::string(".") + ext[1] + ext[3] + "w").string();
  return png_path + ".wld";
}

std::string preview_aux_xml(const GridInfo& grid) {
  if (grid.crs_wkt.empty()) return "<PAMDataset>\n</PAMDataset>\n";
  return fmt::format("<PAMDataset>\n  <SRS>{}</SRS>\n</PAMDataset>\n",
                     xml_escaped(grid.crs_wkt));
}

}  // namespace nimbus
