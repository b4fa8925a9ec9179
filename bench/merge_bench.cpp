// Times merge_cloud_masks_simple on raw float32/uint8 arrays and writes the mask,
// so bench_merge.py can compare speed and output with the numpy/skimage reference.
// Usage: nimbus_merge_bench CLOUD.f32 SHADOW.f32 PRODUCT.u8 WIDTH HEIGHT MIN_AREA OUT.u8 REPEATS
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "nimbus/ops/merge_cloud_masks_simple.h"
#include "nimbus/ops/morphology.h"

template <typename T>
nimbus::LargeBuffer<T> read_raw(const char* path, std::size_t n) {
  nimbus::LargeBuffer<T> v(n);
  std::ifstream in(path, std::ios::binary);
  in.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(n * sizeof(T)));
  if (!in) {
    std::fprintf(stderr, "cannot read %zu values from %s\n", n, path);
    std::exit(2);
  }
  return v;
}

int main(int argc, char** argv) {
  if (argc != 9) {
    std::fprintf(stderr, "usage: %s CLOUD.f32 SHADOW.f32 PRODUCT.u8 WIDTH HEIGHT MIN_AREA OUT.u8 REPEATS\n", argv[0]);
    return 2;
  }
  const int w = std::stoi(argv[4]), h = std::stoi(argv[5]);
  const std::size_t n = static_cast<std::size_t>(w) * h;
  const auto cloud = read_raw<float>(argv[1], n);
  const auto shadow = read_raw<float>(argv[2], n);
  const auto product = read_raw<std::uint8_t>(argv[3], n);
  nimbus::MergeParams params;
  params.min_area = std::stoi(argv[6]);
  const int repeats = std::stoi(argv[8]);
  double best = 1e300;
  nimbus::MaskBuffer mask;
  for (int r = 0; r < repeats; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    mask = nimbus::merge_cloud_masks_simple(cloud, shadow, product, w, h, params);
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  // Phase breakdown (stderr), to see where the time goes.
  {
    using C = std::chrono::steady_clock;
    auto t = C::now();
    auto lap = [&](const char* what) {
      std::fprintf(stderr, "  %-22s %.3f s\n", what, std::chrono::duration<double>(C::now() - t).count());
      t = C::now();
    };
    nimbus::MergeParams threshold_only = params;
    threshold_only.closing_size = 0;
    threshold_only.min_area = 0;
    nimbus::MaskBuffer m = nimbus::merge_cloud_masks_simple(cloud, shadow, product, w, h, threshold_only);
    lap("threshold + OR");
    nimbus::dilate_with_disk(m, w, h, params.closing_size);
    lap("dilation");
    nimbus::remove_small_components(m, w, h, params.min_area);
    lap("min_area");
  }
  std::ofstream(argv[7], std::ios::binary).write(reinterpret_cast<const char*>(mask.data()),
                                                 static_cast<std::streamsize>(n));
  std::printf("%.6f\n", best);
  return 0;
}
