#include "nimbus/ops/morphology.h"

#include <opencv2/core/utility.hpp>
#include <opencv2/imgproc.hpp>

namespace nimbus {
namespace {

// Sets every pixel of the 8-connected components of non-zero pixels of `binary`
// that are smaller than min_area to `replacement` in `mask`. `labels` is
// reused between calls: fresh full-tile buffers cost more than the labelling
// itself on machines with slow page faults.
void replace_small_components(const cv::Mat& binary, cv::Mat& mask, std::uint8_t replacement, int min_area,
                              cv::Mat& labels) {
  cv::Mat stats, centroids;
  // Spaghetti (Bolelli et al.) runs in parallel on OpenCV's thread pool.
  const int n = cv::connectedComponentsWithStats(binary, labels, stats, centroids, 8, CV_32S, cv::CCL_SPAGHETTI);
  std::vector<std::uint8_t> small(static_cast<std::size_t>(n), 0);
  bool any = false;
  for (int label = 1; label < n; ++label) {
    if (stats.at<int>(label, cv::CC_STAT_AREA) < min_area) small[label] = any = true;
  }
  if (!any) return;
  cv::parallel_for_(cv::Range(0, mask.rows), [&](const cv::Range& rows) {
    for (int r = rows.start; r < rows.end; ++r) {
      const int* lab = labels.ptr<int>(r);
      std::uint8_t* m = mask.ptr<std::uint8_t>(r);
      for (int c = 0; c < mask.cols; ++c) {
        if (small[lab[c]]) m[c] = replacement;
      }
    }
  });
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
  cv::Mat labels;
  replace_small_components(m, m, 0, min_area, labels);  // specks of cloud (the 0/1 mask is its own binary image)
  // Holes of clear: label the inverted mask in place, then invert back.
  m ^= cv::Scalar(1);
  cv::Mat holes_filled = m;  // same buffer; replacement 0 here is 1 after inverting back
  replace_small_components(m, holes_filled, 0, min_area, labels);
  m ^= cv::Scalar(1);
}

}  // namespace nimbus
