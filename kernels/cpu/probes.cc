#include "kernels/cpu/probes.h"

#include <sys/mman.h>

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

// The AVX2 versions, for CPUs without AVX-512: float32 FMAs on 8 lanes (16 FLOP), and the
// quantized kernels' integer product, vpmaddubsw (32 multiply-adds of unsigned x signed bytes
// into int16 pairs, 64 operations). 12 chains: the 16 registers hold them with the operands.
constexpr int kAvx2Chains = 12;

__attribute__((target("avx2,fma"))) float F32FmaLoopAvx2(int64_t iterations) {
  __m256 acc[kAvx2Chains];
  for (auto& a : acc) a = _mm256_setzero_ps();
  __m256 a = _mm256_set1_ps(1.0f), b = _mm256_set1_ps(1e-3f);
  for (int64_t it = 0; it < iterations; ++it) {
#pragma GCC unroll 12
    for (int i = 0; i < kAvx2Chains; ++i) acc[i] = _mm256_fmadd_ps(a, b, acc[i]);
    __asm__ volatile("" : "+x"(a), "+x"(b));
  }
  __m256 sum = acc[0];
  for (int i = 1; i < kAvx2Chains; ++i) sum = _mm256_add_ps(sum, acc[i]);
  return _mm256_cvtss_f32(sum);
}

// Each chain feeds its product back in as the next unsigned operand: distinct operands, so the
// compiler cannot fold the chains' identical products into one (which measured the adds, not the
// multiplies), and 12 chains cover the instruction's latency.
__attribute__((target("avx2"))) float Int8DotLoopAvx2(int64_t iterations) {
  __m256i x[kAvx2Chains];
  for (int i = 0; i < kAvx2Chains; ++i) x[i] = _mm256_set1_epi8(static_cast<char>(i + 1));
  __m256i b = _mm256_set1_epi8(1);
  for (int64_t it = 0; it < iterations; ++it) {
#pragma GCC unroll 12
    for (int i = 0; i < kAvx2Chains; ++i) x[i] = _mm256_maddubs_epi16(x[i], b);
    __asm__ volatile("" : "+x"(b));
  }
  __m256i sum = x[0];
  for (int i = 1; i < kAvx2Chains; ++i) sum = _mm256_xor_si256(sum, x[i]);
  return static_cast<float>(_mm256_extract_epi16(sum, 0));
}

bool HasAvx2Fma() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") != 0 && __builtin_cpu_supports("fma") != 0;
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
  // In transparent huge pages where the kernel gives them, as the CPU backend holds weights: 4 KiB
  // pages cost the probe a TLB miss per page that the weights' reads do not pay.
  void* mapped = ::mmap(nullptr, static_cast<size_t>(n) * 4, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mapped == MAP_FAILED) return 0;
  ::madvise(mapped, static_cast<size_t>(n) * 4, MADV_HUGEPAGE);
  float* buf = static_cast<float*>(mapped);
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
      sums[t] = simd::Sum(buf + b, e - b);
    });
    best = std::max(best, static_cast<double>(bytes) / Seconds(start, Clock::now()));
  }
  volatile float sink = sums[0];
  (void)sink;
  ::munmap(mapped, static_cast<size_t>(n) * 4);
  return best;
}

#if defined(__x86_64__)
double MeasureBf16DotPeak() {
  return packed::Available() && packed::HasBf16Dot() ? Peak(Bf16DotLoop, 64 * kChains, kIterations) : 0;
}
double MeasureF32FmaPeak() {
  if (packed::Available()) return Peak(F32FmaLoop, 32 * kChains, kIterations);
  return HasAvx2Fma() ? Peak(F32FmaLoopAvx2, 16 * kAvx2Chains, kIterations) : 0;
}
double MeasureInt8DotPeak() {
  return HasAvx2Fma() ? Peak(Int8DotLoopAvx2, 64 * kAvx2Chains, kIterations) : 0;
}
double MeasureAmxBf16Peak() {
  return packed::HasAmx() ? Peak(AmxLoop, 4 * 16 * 16 * 32 * 2, kAmxIterations) : 0;
}
#else
double MeasureBf16DotPeak() { return 0; }
double MeasureAmxBf16Peak() { return 0; }
double MeasureF32FmaPeak() { return 0; }
double MeasureInt8DotPeak() { return 0; }
#endif

}  // namespace moe::kernels
