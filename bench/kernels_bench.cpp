// Google Benchmark for Nimbus' per-pixel and morphology kernels on a 2048^2 tile.
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "nimbus/ops/compute_cloud_prob.h"
#include "nimbus/ops/compute_shadow_prob.h"
#include "nimbus/ops/merge_cloud_masks_simple.h"
#include "nimbus/ops/morphology.h"
#include "nimbus/tiling/chip_grid.h"

namespace {

constexpr int kSide = 2048;

nimbus::MaskBuffer speckled_mask(double density) {
  std::mt19937 rng(1);
  std::bernoulli_distribution on(density);
  nimbus::MaskBuffer m(static_cast<std::size_t>(kSide) * kSide);
  for (auto& v : m) v = on(rng);
  return m;
}

void BM_DilateDisk5(benchmark::State& state) {
  const auto base = speckled_mask(0.01);
  for (auto _ : state) {
    auto m = base;
    nimbus::dilate_with_disk(m, kSide, kSide, 5);
    benchmark::DoNotOptimize(m.data());
  }
  state.SetItemsProcessed(state.iterations() * kSide * kSide);
}
BENCHMARK(BM_DilateDisk5)->Unit(benchmark::kMillisecond);

void BM_RemoveSmallComponents(benchmark::State& state) {
  auto base = speckled_mask(0.3);
  for (auto _ : state) {
    auto m = base;
    nimbus::remove_small_components(m, kSide, kSide, 50);
    benchmark::DoNotOptimize(m.data());
  }
  state.SetItemsProcessed(state.iterations() * kSide * kSide);
}
BENCHMARK(BM_RemoveSmallComponents)->Unit(benchmark::kMillisecond);

void BM_MergeCloudMasks(benchmark::State& state) {
  std::mt19937 rng(2);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  const std::size_t n = static_cast<std::size_t>(kSide) * kSide;
  nimbus::FloatBuffer cloud(n), shadow(n);
  for (std::size_t i = 0; i < n; ++i) {
    cloud[i] = u(rng) * u(rng);
    shadow[i] = u(rng) * u(rng) * u(rng);
  }
  const auto product = speckled_mask(0.001);
  nimbus::MergeParams params;
  params.min_area = static_cast<int>(state.range(0));
  for (auto _ : state) {
    auto m = nimbus::merge_cloud_masks_simple(cloud, shadow, product, kSide, kSide, params);
    benchmark::DoNotOptimize(m.data());
  }
  state.SetItemsProcessed(state.iterations() * kSide * kSide);
}
BENCHMARK(BM_MergeCloudMasks)->Arg(0)->Arg(50)->Unit(benchmark::kMillisecond);

void BM_SoftmaxClass1(benchmark::State& state) {
  const std::size_t n = 512 * 512;
  std::vector<float> scores(2 * n);
  std::mt19937 rng(3);
  std::normal_distribution<float> g(0.0f, 3.0f);
  for (auto& s : scores) s = g(rng);
  std::vector<float> out(n);
  const auto& head = nimbus::cloud_probability_head();
  for (auto _ : state) {
    for (std::size_t i = 0; i < n; ++i) out[i] = nimbus::activate(head, scores.data() + i, n);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(state.iterations() * n);
}
BENCHMARK(BM_SoftmaxClass1)->Unit(benchmark::kMicrosecond);

void BM_ChipGridFullTile(benchmark::State& state) {
  for (auto _ : state) {
    nimbus::ChipGrid grid(10980, 10980, 512, 0.25);
    benchmark::DoNotOptimize(grid.size());
  }
}
BENCHMARK(BM_ChipGridFullTile);

}  // namespace
