#include "nimbus/ops/morphology.h"

#include <opencv2/imgproc.hpp>

namespace nimbus {
namespace {

// Sets every pixel of components of `value` smaller than min_area to `replacement`.
void replace_small_components(cv::Mat& mask, std::uint8_t value, std::uint8_t replacement, int min_area) {
  cv::Mat selected = (mask == value);
  cv::Mat labels, stats, centroids;
  // Spaghetti (Bolelli et al.) runs in parallel on OpenCV's thread pool.
  const int n = cv::connectedComponentsWithStats(selected, labels, stats, centroids, 8, CV_32S, cv::CCL_SPAGHETTI);
  std::vector<std::uint8_t> small(static_cast<std::size_t>(n), 0);
  bool any = false;
  for (int label = 1; label < n; ++label) {
    if (stats.at<int>(label, cv::CC_STAT_AREA) < min_area) small[label] = any = true;
  }
  if (!any) return;
  for (int r = 0; r < mask.rows; ++r) {
    const int* lab = labels.ptr<int>(r);
    std::uint8_t* m = mask.ptr<std::uint8_t>(r);
    for (int c = 0; c < mask.cols; ++c) {
      if (small[lab[c]]) m[c] = replacement;
    }
  }
}

}  // namespace

std::vector<std::uint8_t> disk_footprint(int radius) {
  const int size = 2 * radius + 1;
  std::vector<std::uint8_t> fp(static_cast<std::size_t>(size) * size, 0);
  for (int dy = -radius; dy <= radius; ++dy) {
    for (int dx = -radius; dx <= radius; ++dx) {
      fp[static_cast<std::size_t>(dy + radius) * size + (dx + radius)] = (dx * dx + dy * dy <= radius * radius);
    }
  }
  return fp;
}

void dilate_with_disk(std::vector<std::uint8_t>& mask, int width, int height, int radius) {
  if (radius <= 0) return;  // disk(0) is the identity
  std::vector<std::uint8_t> fp = disk_footprint(radius);
  const cv::Mat kernel(2 * radius + 1, 2 * radius + 1, CV_8U, fp.data());
  cv::Mat m(height, width, CV_8U, mask.data());
  // Pixels outside the image count as 0, as scipy's border_value=0.
  cv::dilate(m, m, kernel, cv::Point(-1, -1), 1, cv::BORDER_CONSTANT, cv::Scalar(0));
}

void remove_small_components(std::vector<std::uint8_t>& mask, int width, int height, int min_area) {
  if (min_area <= 0) return;
  cv::Mat m(height, width, CV_8U, mask.data());
  replace_small_components(m, 1, 0, min_area);  // specks of cloud
  replace_small_components(m, 0, 1, min_area);  // holes of clear
}

}  // namespace nimbus
