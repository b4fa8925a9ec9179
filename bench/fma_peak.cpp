// Measures the FP32 FMA peak: 12 independent 256-bit FMA chains per thread
// (enough to cover FMA latency x throughput), on 1 and on all threads.
#include <immintrin.h>

#include <chrono>
#include <cstdio>
#include <thread>
#include <vector>

static double run(long iterations) {
  __m256 acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm256_set1_ps(1.0f + i * 1e-3f);
  const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
  for (long it = 0; it < iterations; ++it) {
    for (int i = 0; i < 12; ++i) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
  }
  float sink = 0;
  for (int i = 0; i < 12; ++i) sink += _mm256_cvtss_f32(acc[i]);
  return sink;
}

int main() {
  const long iterations = 200000000;
  const double flop_per_thread = 12.0 * 8 * 2 * iterations;
  for (unsigned threads : {1u, std::thread::hardware_concurrency()}) {
    std::vector<std::thread> pool;
    std::vector<double> sinks(threads);
    const auto t0 = std::chrono::steady_clock::now();
    for (unsigned t = 0; t < threads; ++t) pool.emplace_back([&, t] { sinks[t] = run(iterations); });
    for (auto& t : pool) t.join();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("threads=%u gflops=%.1f (sink %.1f)\n", threads, flop_per_thread * threads / s / 1e9, sinks[0]);
  }
  return 0;
}
