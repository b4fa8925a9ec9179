// Measures the FP32 FMA peak: 12 independent FMA chains per thread (enough to
// cover FMA latency x throughput), on 1 and on all threads, with 256-bit (AVX2)
// and, where the CPU has it, 512-bit (AVX-512) vectors. The peak of the machine
// is the larger figure: oneDNN uses the widest vectors the CPU offers.
#include <immintrin.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <thread>
#include <vector>

__attribute__((target("avx2,fma"))) static double run_avx2(long iterations) {
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

__attribute__((target("avx512f"))) static double run_avx512(long iterations) {
  __m512 acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm512_set1_ps(1.0f + i * 1e-3f);
  const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
  for (long it = 0; it < iterations; ++it) {
    for (int i = 0; i < 12; ++i) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
  }
  float sink = 0;
  for (int i = 0; i < 12; ++i) sink += _mm512_reduce_add_ps(acc[i]);
  return sink;
}

int main() {
  const long iterations = 100000000;
  struct Isa {
    const char* name;
    int lanes;
    double (*run)(long);
    bool available;
  };
  const Isa isas[] = {{"avx2", 8, run_avx2, static_cast<bool>(__builtin_cpu_supports("fma"))},
                      {"avx512", 16, run_avx512, static_cast<bool>(__builtin_cpu_supports("avx512f"))}};
  for (const Isa& isa : isas) {
    if (!isa.available) continue;
    const double flop_per_thread = 12.0 * isa.lanes * 2 * iterations;
    for (unsigned threads : {1u, std::thread::hardware_concurrency()}) {
      std::vector<std::thread> pool;
      std::vector<double> sinks(threads);
      const auto t0 = std::chrono::steady_clock::now();
      for (unsigned t = 0; t < threads; ++t) pool.emplace_back([&, t] { sinks[t] = isa.run(iterations); });
      for (auto& t : pool) t.join();
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::printf("isa=%s threads=%u gflops=%.1f (sink %.1f)\n", isa.name, threads,
                  flop_per_thread * threads / s / 1e9, sinks[0]);
    }
  }
  return 0;
}
