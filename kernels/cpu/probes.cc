#include "kernels/cpu/probes.h"

#include <algorithm>
#include <chrono>
#include <vector>

#include "kernels/cpu/packed_matmul.h"
#include "kernels/cpu/simd_kernels.h"
#include "kernels/cpu/thread_pool.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace moe::kernels {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

#if defined(__x86_64__)
// 24 independent accumulators: more than the instructions' latency times their throughput, so
// the loop runs at the issue rate. The asm barrier keeps the operands live in registers without
// letting the compiler fold the loop.
constexpr int kChains = 24;
constexpr int64_t kIterations = 20'000'000;

__attribute__((target("avx512f,avx512bf16"))) float Bf16DotLoop(int64_t iterations) {
  __m512 acc[kChains];
  for (auto& a : acc) a = _mm512_setzero_ps();
  __m512bh a = (__m512bh)_mm512_set1_epi32(0x3f803f80), b = (__m512bh)_mm512_set1_epi32(0x3c003c00);
  for (int64_t it = 0; it < iterations; ++it) {
#pragma GCC unroll 24
    for (int i = 0; i < kChains; ++i) acc[i] = _mm512_dpbf16_ps(acc[i], a, b);
    __asm__ volatile("" : "+v"(a), "+v"(b));
  }
  __m512 sum = acc[0];
  for (int i = 1; i < kChains; ++i) sum = _mm512_add_ps(sum, acc[i]);
  return _mm512_cvtss_f32(sum);  // any use of every chain keeps the loop
}

__attribute__((target("avx512f"))) float F32FmaLoop(int64_t iterations) {
  __m512 acc[kChains];
  for (auto& a : acc) a = _mm512_setzero_ps();
  __m512 a = _mm512_set1_ps(1.0f), b = _mm512_set1_ps(1e-3f);
  for (int64_t it = 0; it < iterations; ++it) {
#pragma GCC unroll 24
    for (int i = 0; i < kChains; ++i) acc[i] = _mm512_fmadd_ps(a, b, acc[i]);
    __asm__ volatile("" : "+v"(a), "+v"(b));
  }
  __m512 sum = acc[0];
  for (int i = 1; i < kChains; ++i) sum = _mm512_add_ps(sum, acc[i]);
  return _mm512_cvtss_f32(sum);  // any use of every chain keeps the loop
}

// 4 independent tile accumulators (tiles 0-3) fed from tiles 4-7: 4 x 16 x 16 outputs, each a
// sum of 32 products, per round.
constexpr int64_t kAmxIterations = 2'000'000;

__attribute__((target("amx-tile,amx-bf16"))) float AmxLoop(int64_t iterations) {
  struct {
    uint8_t palette = 1, start_row = 0, reserved[14] = {};
    uint16_t bytes_per_row[16] = {};
    uint8_t rows[16] = {};
  } config;
  for (int t = 0; t < 8; ++t) {
    config.bytes_per_row[t] = 64;
    config.rows[t] = 16;
  }
  alignas(64) uint16_t ones[16 * 32];
  alignas(64) float out[16 * 16];
  for (uint16_t& v : ones) v = 0x3c00;  // BF16 0.0078125: the sums stay finite
  _tile_loadconfig(&config);
  _tile_loadd(4, ones, 64);
  _tile_loadd(5, ones, 64);
  _tile_loadd(6, ones, 64);
  _tile_loadd(7, ones, 64);
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  for (int64_t it = 0; it < iterations; ++it) {
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
  }
  _tile_stored(0, out, 64);
  _tile_release();
  return out[0];
}

// Every thread of the pool runs loop once; FLOP per second of the slowest, best of 3 rounds.
double Peak(float (*loop)(int64_t), double flop_per_iteration, int64_t iterations) {
  const int64_t threads = CpuThreads();
  std::vector<float> sink(static_cast<size_t>(threads));
  double best = 0;
  for (int round = 0; round < 3; ++round) {
    const auto start = Clock::now();
    ParallelFor(threads, [&](int64_t t) { sink[t] = loop(iterations); });
    const double flop = static_cast<double>(threads) * iterations * flop_per_iteration;
    best = std::max(best, flop / Seconds(start, Clock::now()));
  }
  volatile float keep = sink[0];
  (void)keep;
  return best;
}
#endif

}  // namespace

double MeasureReadBandwidth(int64_t bytes) {
  const int64_t n = bytes / 4;
  std::vector<float> buf(static_cast<size_t>(n));
  const int64_t tasks = CpuThreads();
  ParallelFor(tasks, [&](int64_t t) {  // first touch from the threads that will read
    for (int64_t i = t * n / tasks; i < (t + 1) * n / tasks; ++i) buf[i] = 1.0f;
  });
  std::vector<float> sums(static_cast<size_t>(tasks));
  double best = 0;
  for (int pass = 0; pass < 5; ++pass) {
    const auto start = Clock::now();
    ParallelFor(tasks, [&](int64_t t) {
      const int64_t b = t * n / tasks, e = (t + 1) * n / tasks;
      sums[t] = simd::Sum(buf.data() + b, e - b);
    });
    best = std::max(best, static_cast<double>(bytes) / Seconds(start, Clock::now()));
  }
  volatile float sink = sums[0];
  (void)sink;
  return best;
}

#if defined(__x86_64__)
double MeasureBf16DotPeak() {
  return packed::Available() && packed::HasBf16Dot() ? Peak(Bf16DotLoop, 64 * kChains, kIterations) : 0;
}
double MeasureF32FmaPeak() {
  return packed::Available() ? Peak(F32FmaLoop, 32 * kChains, kIterations) : 0;
}
double MeasureAmxBf16Peak() {
  return packed::HasAmx() ? Peak(AmxLoop, 4 * 16 * 16 * 32 * 2, kAmxIterations) : 0;
}
#else
double MeasureBf16DotPeak() { return 0; }
double MeasureAmxBf16Peak() { return 0; }
double MeasureF32FmaPeak() { return 0; }
#endif

}  // namespace moe::kernels
