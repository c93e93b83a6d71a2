// The quantized kernels (see quant_matmul.h). The AVX2 code lives in functions compiled for it
// with target attributes, never in a file built with -mavx2: only the run-time check
// (Available) leads here, so the program still starts on older CPUs.
#include "kernels/cpu/quant_matmul.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "kernels/cpu/thread_pool.h"
#include "kernels/quant.h"

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>

#define MOE_TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))
#define MOE_UNROLL _Pragma("GCC unroll 16")
// The loops over k groups stay (nearly) rolled: fully unrolled, GCC reassociates the int16 sums,
// computes every product first and spills them (measured 2x slower).
#define MOE_ROLLED _Pragma("GCC unroll 1")
#define MOE_UNROLL_TWICE _Pragma("GCC unroll 2")
#endif

namespace moe::kernels::quant {
namespace {

constexpr int64_t kPanel = kQuantPanelCols;
constexpr int64_t kBlock = kQuantBlock;             // k per block
constexpr int64_t kGroups = kBlock / 4;             // groups of 4 k in a block: 16
constexpr int64_t kI8BlockBytes = kBlock * kPanel;  // 1024
constexpr int64_t kQ4BlockBytes = 2 * kPanel * 2 + kBlock * kPanel / 2;  // 64 + 512 = 576

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Decode streams panels from memory; asking 8 KiB ahead measured 1.2-1.5x faster than leaving it
// to the hardware prefetcher (2-vCPU Zen 3).
constexpr int64_t kPrefetchBytes = 8192;

struct Layout {
  DType dtype;
  int64_t n, k, blocks, panels;
  int64_t panel_bytes() const {
    return dtype == DType::kI8 ? 4 * kPanel + blocks * kI8BlockBytes : blocks * kQ4BlockBytes;
  }
  Layout(DType t, int64_t rows, int64_t cols)
      : dtype(t), n(rows), k(cols), blocks(CeilDiv(cols, kBlock)), panels(CeilDiv(rows, kPanel)) {}
};

// Panel p of the row-major quantized w, whose rows [row0, row0 + 16) hold the panel's columns
// (row0 = 16 p for a whole matrix; 0 for a panel's rows quantized on their own).
void PackPanel(const WeightMatrix& w, int64_t row0, int64_t cols_valid, const Layout& l,
               char* out) {
  std::memset(out, 0, static_cast<size_t>(l.panel_bytes()));
  if (w.dtype == DType::kI8) {
    auto* scales = reinterpret_cast<float*>(out);
    auto* data = reinterpret_cast<uint8_t*>(out + 4 * kPanel);
    std::fill(data, data + l.blocks * kI8BlockBytes, uint8_t{128});  // q = 0
    const auto* q = static_cast<const int8_t*>(w.data);
    for (int64_t c = 0; c < cols_valid; ++c) {
      scales[c] = static_cast<const float*>(w.scales)[row0 + c];
      const int8_t* row = q + (row0 + c) * l.k;
      for (int64_t kk = 0; kk < l.k; ++kk) {
        const int64_t b = kk / kBlock, g = (kk % kBlock) / 4, t = kk % 4;  // g < kGroups
        data[b * kI8BlockBytes + g * 64 + c * 4 + t] = static_cast<uint8_t>(row[kk] + 128);
      }
    }
    return;
  }
  const int64_t groups = QuantGroups(l.k), row_bytes = (l.k + 1) / 2;
  const auto* q = static_cast<const uint8_t*>(w.data);
  for (int64_t c = 0; c < cols_valid; ++c) {
    const uint8_t* row = q + (row0 + c) * row_bytes;
    for (int64_t b = 0; b < l.blocks; ++b) {
      char* block = out + b * kQ4BlockBytes;
      const auto* scales = static_cast<const uint16_t*>(w.scales) + (row0 + c) * groups;
      const auto* mins = static_cast<const uint16_t*>(w.mins) + (row0 + c) * groups;
      std::memcpy(block + 2 * c, &scales[b], 2);
      std::memcpy(block + 2 * kPanel + 2 * c, &mins[b], 2);
      auto* data = reinterpret_cast<uint8_t*>(block + 4 * kPanel);
      for (int64_t j = 0; j < kBlock && b * kBlock + j < l.k; ++j) {
        const int64_t kk = b * kBlock + j;
        const int level = (row[kk / 2] >> (kk % 2 == 0 ? 0 : 4)) & 0xf;
        const int64_t pair = (j % (kBlock / 2)) / 4, t = j % 4;
        data[pair * 64 + c * 4 + t] |= static_cast<uint8_t>(level << (j < kBlock / 2 ? 0 : 4));
      }
    }
  }
}

#if defined(__x86_64__)

bool HasF16c() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  return __get_cpuid(1, &eax, &ebx, &ecx, &edx) != 0 && (ecx & (1u << 29)) != 0;
}

bool CpuHasAvx2() {
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") != 0 && __builtin_cpu_supports("fma") != 0 && HasF16c();
  }();
  return has;
}

// --- Activations ------------------------------------------------------------------------------
// Each row: q int8 [k_padded] (zero padded), and per block d, d * sum and 128 * sum.

struct Activations {
  int64_t m = 0, blocks = 0, row_stride = 0;  // row_stride in bytes, a multiple of 64
  std::vector<int8_t> q;                      // [m, row_stride]
  std::vector<float> d, dsum;                 // [m, blocks]
  std::vector<int32_t> sum128;                // [m, blocks]
};

Activations& Scratch() {
  thread_local Activations a;
  return a;
}

// One block of 64 values (zero padded past n), as QuantizeActivationBlock computes it.
MOE_TARGET_AVX2 void QuantizeBlockAvx2(const float* x, int64_t n, int8_t* q, float* d, float* dsum,
                                       int32_t* sum128) {
  alignas(32) float padded[kBlock];
  if (n < kBlock) {
    std::memset(padded, 0, sizeof(padded));
    std::memcpy(padded, x, static_cast<size_t>(n) * sizeof(float));
    x = padded;
  }
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  constexpr int kVectors = kBlock / 8;
  __m256 v[kVectors], amax = _mm256_setzero_ps(), unordered = _mm256_setzero_ps();
  const __m256 big = _mm256_set1_ps(3.4028235e38f);
  MOE_UNROLL
  for (int i = 0; i < kVectors; ++i) {
    v[i] = _mm256_loadu_ps(x + 8 * i);
    const __m256 a = _mm256_and_ps(v[i], abs_mask);
    amax = _mm256_max_ps(amax, a);
    // Not (|x| <= FLT_MAX): a NaN or an infinity.
    unordered = _mm256_or_ps(unordered, _mm256_cmp_ps(a, big, _CMP_NLE_UQ));
  }
  if (_mm256_movemask_ps(unordered) != 0) {
    std::memset(q, 0, kBlock);
    *d = __builtin_nanf("");
    *dsum = *d;
    *sum128 = 0;
    return;
  }
  __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
  m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
  m4 = _mm_max_ss(m4, _mm_shuffle_ps(m4, m4, 1));
  const float scale = _mm_cvtss_f32(m4) / 127.0f;
  const __m256 inverse = _mm256_set1_ps(scale > 0 ? 1.0f / scale : 0.0f);
  __m256i i32[kVectors], s = _mm256_setzero_si256();
  MOE_UNROLL
  for (int i = 0; i < kVectors; ++i) {
    i32[i] = _mm256_cvtps_epi32(_mm256_mul_ps(v[i], inverse));
    s = _mm256_add_epi32(s, i32[i]);
  }
  __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
  s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
  s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
  const int32_t sum = _mm_cvtsi128_si32(s4);
  // int32 -> int8 in order, 32 at a time: the packs interleave 128-bit lanes, the permute undoes
  // it.
  MOE_UNROLL
  for (int i = 0; i < kVectors; i += 4) {
    const __m256i w16a = _mm256_packs_epi32(i32[i], i32[i + 1]);
    const __m256i w16b = _mm256_packs_epi32(i32[i + 2], i32[i + 3]);
    const __m256i b8 = _mm256_packs_epi16(w16a, w16b);
    const __m256i ordered =
        _mm256_permutevar8x32_epi32(b8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + 8 * i), ordered);
  }
  *d = scale;
  *dsum = scale * static_cast<float>(sum);
  *sum128 = 128 * sum;
}

void QuantizeActivations(const float* x, int64_t m, int64_t k, Activations* a) {
  a->m = m;
  a->blocks = CeilDiv(k, kBlock);
  // Rows k bytes apart (a multiple of 4 KiB for Mixtral's widths) would share L1 sets; a cache
  // line of padding spreads them.
  a->row_stride = a->blocks * kBlock + 64;
  a->q.resize(static_cast<size_t>(m * a->row_stride));
  a->d.resize(static_cast<size_t>(m * a->blocks));
  a->dsum.resize(a->d.size());
  a->sum128.resize(a->d.size());
  const int64_t rows_per_task = std::max<int64_t>(1, (int64_t{1} << 14) / std::max<int64_t>(k, 1));
  ParallelFor(CeilDiv(m, rows_per_task), [&](int64_t task) {
    for (int64_t i = task * rows_per_task; i < std::min(m, (task + 1) * rows_per_task); ++i) {
      for (int64_t b = 0; b < a->blocks; ++b) {
        const int64_t at = i * a->blocks + b;
        QuantizeBlockAvx2(x + i * k + b * kBlock, std::min(kBlock, k - b * kBlock),
                          a->q.data() + i * a->row_stride + b * kBlock, &a->d[at], &a->dsum[at],
                          &a->sum128[at]);
      }
    }
  });
}

// --- Microkernels: y[MR rows, NV x 8 columns of a panel] ---------------------------------------
// x: the tile's first row of activations (rows row_stride bytes apart), with its per-block
// scales (rows `blocks` apart). v0: the first 8-column half the call covers (0 or 1).

struct TileArgs {
  const int8_t* xq;
  const float* d;
  const float* dsum;
  const int32_t* sum128;
  int64_t row_stride, blocks;
  const char* panel;
  float* y;
  int64_t ldy;
  int cols_valid;  // of the panel's 16
};

MOE_TARGET_AVX2 inline __m256i Broadcast4(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm256_set1_epi32(v);
}

MOE_TARGET_AVX2 inline void StoreColumns(float* y, __m256 v, int valid) {
  if (valid >= 8) {
    _mm256_storeu_ps(y, v);
  } else if (valid > 0) {
    const __m256i mask =
        _mm256_cmpgt_epi32(_mm256_set1_epi32(valid), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    _mm256_maskstore_ps(y, mask, v);
  }
}

template <int MR, int NV>
MOE_TARGET_AVX2 void KernelI8(const TileArgs& a, int v0) {
  __m256 acc[MR][NV];
  MOE_UNROLL
  for (int i = 0; i < MR; ++i) {
    MOE_UNROLL
    for (int v = 0; v < NV; ++v) acc[i][v] = _mm256_setzero_ps();
  }
  const __m256i low4 = _mm256_set1_epi8(0x0f);
  const __m256i ones = _mm256_set1_epi16(1), sixteens = _mm256_set1_epi16(16);
  const auto* data = reinterpret_cast<const uint8_t*>(a.panel + 4 * kPanel);
  for (int64_t b = 0; b < a.blocks; ++b) {
    const uint8_t* block = data + b * kI8BlockBytes + 32 * v0;
    // q + 128 = 16 hi + lo, each nibble times x with vpmaddubsw (a whole byte times x could
    // saturate its int16 pair sums). dot[i][v]: the block's exact dot product, int32.
    __m256i dot[MR][NV];
    MOE_UNROLL
    for (int i = 0; i < MR; ++i) {
      MOE_UNROLL
      for (int v = 0; v < NV; ++v) dot[i][v] = _mm256_setzero_si256();
    }
    for (int half = 0; half < 2; ++half) {
      // Per int16 lane, 8 groups x 2 products of at most 15 x 127: 30480 < 32767.
      __m256i lo_sum[MR][NV], hi_sum[MR][NV];
      MOE_UNROLL
      for (int i = 0; i < MR; ++i) {
        MOE_UNROLL
        for (int v = 0; v < NV; ++v) lo_sum[i][v] = hi_sum[i][v] = _mm256_setzero_si256();
      }
      MOE_ROLLED
      for (int g = 8 * half; g < 8 * half + 8; ++g) {
        __m256i lo[NV], hi[NV];
        _mm_prefetch(reinterpret_cast<const char*>(block + g * 64 + kPrefetchBytes), _MM_HINT_T0);
        MOE_UNROLL
        for (int v = 0; v < NV; ++v) {
          const __m256i w =
              _mm256_load_si256(reinterpret_cast<const __m256i*>(block + g * 64 + 32 * v));
          lo[v] = _mm256_and_si256(w, low4);
          hi[v] = _mm256_and_si256(_mm256_srli_epi16(w, 4), low4);
        }
        MOE_UNROLL
        for (int i = 0; i < MR; ++i) {
          const __m256i xg = Broadcast4(a.xq + i * a.row_stride + b * kBlock + 4 * g);
          MOE_UNROLL
          for (int v = 0; v < NV; ++v) {
            lo_sum[i][v] = _mm256_add_epi16(lo_sum[i][v], _mm256_maddubs_epi16(lo[v], xg));
            hi_sum[i][v] = _mm256_add_epi16(hi_sum[i][v], _mm256_maddubs_epi16(hi[v], xg));
          }
        }
      }
      MOE_UNROLL
      for (int i = 0; i < MR; ++i) {
        MOE_UNROLL
        for (int v = 0; v < NV; ++v) {
          dot[i][v] = _mm256_add_epi32(dot[i][v],
                                       _mm256_add_epi32(_mm256_madd_epi16(hi_sum[i][v], sixteens),
                                                        _mm256_madd_epi16(lo_sum[i][v], ones)));
        }
      }
    }
    MOE_UNROLL
    for (int i = 0; i < MR; ++i) {
      const __m256 d = _mm256_set1_ps(a.d[i * a.blocks + b]);
      const __m256i offset = _mm256_set1_epi32(a.sum128[i * a.blocks + b]);
      MOE_UNROLL
      for (int v = 0; v < NV; ++v) {
        acc[i][v] =
            _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(dot[i][v], offset)), d, acc[i][v]);
      }
    }
  }
  const auto* scales = reinterpret_cast<const float*>(a.panel);
  MOE_UNROLL
  for (int v = 0; v < NV; ++v) {
    const __m256 s = _mm256_load_ps(scales + 8 * (v0 + v));
    const int valid = a.cols_valid - 8 * (v0 + v);
    MOE_UNROLL
    for (int i = 0; i < MR; ++i)
      StoreColumns(a.y + i * a.ldy + 8 * v, _mm256_mul_ps(acc[i][v], s), valid);
  }
}

template <int MR, int NV>
MOE_TARGET_AVX2 void KernelQ4(const TileArgs& a, int v0) {
  __m256 acc[MR][NV];
  MOE_UNROLL
  for (int i = 0; i < MR; ++i) {
    MOE_UNROLL
    for (int v = 0; v < NV; ++v) acc[i][v] = _mm256_setzero_ps();
  }
  const __m256i low4 = _mm256_set1_epi8(0x0f), ones = _mm256_set1_epi16(1);
  for (int64_t b = 0; b < a.blocks; ++b) {
    const char* block = a.panel + b * kQ4BlockBytes;
    const auto* data = reinterpret_cast<const uint8_t*>(block + 4 * kPanel) + 32 * v0;
    // The low nibbles hold k 0..31 of the block, the high ones k 32..63, each summed apart:
    // per int16 lane, 8 pairs x 2 products of at most 15 x 127, 30480 < 32767.
    __m256i lo_sum[MR][NV], hi_sum[MR][NV];
    MOE_UNROLL
    for (int i = 0; i < MR; ++i) {
      MOE_UNROLL
      for (int v = 0; v < NV; ++v) lo_sum[i][v] = hi_sum[i][v] = _mm256_setzero_si256();
    }
    MOE_UNROLL_TWICE
    for (int p = 0; p < kGroups / 2; ++p) {
      __m256i lo[NV], hi[NV];
      _mm_prefetch(reinterpret_cast<const char*>(data + p * 64 + kPrefetchBytes), _MM_HINT_T0);
      MOE_UNROLL
      for (int v = 0; v < NV; ++v) {
        const __m256i w =
            _mm256_load_si256(reinterpret_cast<const __m256i*>(data + p * 64 + 32 * v));
        lo[v] = _mm256_and_si256(w, low4);
        hi[v] = _mm256_and_si256(_mm256_srli_epi16(w, 4), low4);
      }
      MOE_UNROLL
      for (int i = 0; i < MR; ++i) {
        const int8_t* xb = a.xq + i * a.row_stride + b * kBlock;
        const __m256i x_lo = Broadcast4(xb + 4 * p), x_hi = Broadcast4(xb + kBlock / 2 + 4 * p);
        MOE_UNROLL
        for (int v = 0; v < NV; ++v) {
          lo_sum[i][v] = _mm256_add_epi16(lo_sum[i][v], _mm256_maddubs_epi16(lo[v], x_lo));
          hi_sum[i][v] = _mm256_add_epi16(hi_sum[i][v], _mm256_maddubs_epi16(hi[v], x_hi));
        }
      }
    }
    const auto* scales = reinterpret_cast<const __m128i*>(block);
    const auto* mins = reinterpret_cast<const __m128i*>(block + 2 * kPanel);
    __m256 s[NV], mn[NV];
    MOE_UNROLL
    for (int v = 0; v < NV; ++v) {
      s[v] = _mm256_cvtph_ps(_mm_load_si128(scales + v0 + v));
      mn[v] = _mm256_cvtph_ps(_mm_load_si128(mins + v0 + v));
    }
    MOE_UNROLL
    for (int i = 0; i < MR; ++i) {
      const __m256 d = _mm256_set1_ps(a.d[i * a.blocks + b]);
      const __m256 dsum = _mm256_set1_ps(a.dsum[i * a.blocks + b]);
      MOE_UNROLL
      for (int v = 0; v < NV; ++v) {
        const __m256 dot = _mm256_cvtepi32_ps(_mm256_add_epi32(
            _mm256_madd_epi16(lo_sum[i][v], ones), _mm256_madd_epi16(hi_sum[i][v], ones)));
        acc[i][v] = _mm256_fmadd_ps(dot, _mm256_mul_ps(s[v], d), acc[i][v]);
        acc[i][v] = _mm256_fmadd_ps(mn[v], dsum, acc[i][v]);
      }
    }
  }
  MOE_UNROLL
  for (int v = 0; v < NV; ++v) {
    const int valid = a.cols_valid - 8 * (v0 + v);
    MOE_UNROLL
    for (int i = 0; i < MR; ++i) StoreColumns(a.y + i * a.ldy + 8 * v, acc[i][v], valid);
  }
}

// Row tiles: a single row covers both halves of a panel at once (decode: the panel streams
// through once); taller tiles take one half at a time, 3 rows, which keeps the sums (INT8 4 per
// row, INT4 3) nearly all in the 16 registers: INT8 measured 1.3x faster at 3 rows than at 2.
constexpr int kI8TallRows = 3;
constexpr int kQ4TallRows = 3;

using KernelFn = void (*)(const TileArgs&, int);

template <int MR, int NV>
struct I8 {
  static void Run(const TileArgs& a, int v0) { KernelI8<MR, NV>(a, v0); }
};
template <int MR, int NV>
struct Q4 {
  static void Run(const TileArgs& a, int v0) { KernelQ4<MR, NV>(a, v0); }
};

template <template <int, int> class K>
KernelFn TallKernel(int rows) {
  switch (rows) {
    case 1:
      return &K<1, 1>::Run;
    case 2:
      return &K<2, 1>::Run;
    default:
      return &K<3, 1>::Run;
  }
}

// Rows [r0, r1) of y against panels [p0, p1).
void RunTask(const Activations& x, const WeightMatrix& w, const Layout& l, int64_t r0, int64_t r1,
             int64_t p0, int64_t p1, float* y) {
  const bool i8 = w.dtype == DType::kI8;
  const bool wide = r1 - r0 == 1;
  const int rows_per_tile = wide ? 1 : i8 ? kI8TallRows : kQ4TallRows;
  for (int64_t p = p0; p < p1; ++p) {
    TileArgs args{};
    args.row_stride = x.row_stride;
    args.blocks = x.blocks;
    args.panel = static_cast<const char*>(w.data) + p * l.panel_bytes();
    args.ldy = l.n;
    args.cols_valid = static_cast<int>(std::min<int64_t>(kPanel, l.n - p * kPanel));
    for (int v0 = 0; v0 < (wide ? 1 : 2); ++v0) {
      if (8 * v0 >= args.cols_valid) break;
      for (int64_t i = r0; i < r1; i += rows_per_tile) {
        const int rows = static_cast<int>(std::min<int64_t>(rows_per_tile, r1 - i));
        args.xq = x.q.data() + i * x.row_stride;
        args.d = x.d.data() + i * x.blocks;
        args.dsum = x.dsum.data() + i * x.blocks;
        args.sum128 = x.sum128.data() + i * x.blocks;
        args.y = y + i * l.n + p * kPanel + 8 * v0;
        const KernelFn fn = wide ? (i8 ? &I8<1, 2>::Run : &Q4<1, 2>::Run)
                                 : (i8 ? TallKernel<I8>(rows) : TallKernel<Q4>(rows));
        fn(args, v0);
      }
    }
  }
}

#endif  // __x86_64__

}  // namespace

size_t PackedBytes(DType dtype, int64_t rows, int64_t cols) {
  const Layout l(dtype, rows, cols);
  return static_cast<size_t>(l.panels * l.panel_bytes());
}

WeightMatrix Pack(const WeightMatrix& w, void* dst) {
  const Layout l(w.dtype, w.rows, w.cols);
  char* out = static_cast<char*>(dst);
  ParallelFor(l.panels, [&](int64_t p) {
    PackPanel(w, p * kPanel, std::min(kPanel, l.n - p * kPanel), l, out + p * l.panel_bytes());
  });
  WeightMatrix packed{w.dtype, dst, w.rows, w.cols, WeightLayout::kCpuPanels};
  return packed;
}

WeightMatrix QuantizeAndPack(const WeightMatrix& w, DType dtype, void* dst) {
  const Layout l(dtype, w.rows, w.cols);
  char* out = static_cast<char*>(dst);
  ParallelFor(l.panels, [&](int64_t p) {
    const int64_t row0 = p * kPanel, rows = std::min(kPanel, l.n - row0);
    thread_local std::vector<uint8_t> q;
    thread_local std::vector<uint16_t> scales;  // INT8: the floats' bytes; INT4: scales, mins
    q.resize(static_cast<size_t>(QuantDataBytes(dtype, rows, w.cols)));
    scales.resize(static_cast<size_t>(QuantScaleBytes(dtype, rows, w.cols) / 2));
    WeightMatrix source = w;
    source.data = static_cast<const char*>(w.data) + row0 * w.cols * DTypeSize(w.dtype);
    source.rows = rows;
    WeightMatrix quantized{dtype, q.data(), rows, w.cols};
    if (dtype == DType::kI8) {
      auto* s = reinterpret_cast<float*>(scales.data());
      QuantizeRowsInt8(source, 0, rows, reinterpret_cast<int8_t*>(q.data()), s);
      quantized.scales = s;
    } else {
      const int64_t half = rows * QuantGroups(w.cols);
      QuantizeRowsInt4(source, 0, rows, q.data(), scales.data(), scales.data() + half);
      quantized.scales = scales.data();
      quantized.mins = scales.data() + half;
    }
    PackPanel(quantized, 0, rows, l, out + p * l.panel_bytes());
  });
  return WeightMatrix{dtype, dst, w.rows, w.cols, WeightLayout::kCpuPanels};
}

void DequantizePackedRow(const WeightMatrix& w, int64_t r, float* out) {
  const Layout l(w.dtype, w.rows, w.cols);
  const char* panel = static_cast<const char*>(w.data) + (r / kPanel) * l.panel_bytes();
  const int64_t c = r % kPanel;
  for (int64_t kk = 0; kk < l.k; ++kk) {
    const int64_t b = kk / kBlock, j = kk % kBlock;
    if (w.dtype == DType::kI8) {
      const float scale = reinterpret_cast<const float*>(panel)[c];
      const auto* data = reinterpret_cast<const uint8_t*>(panel + 4 * kPanel);
      const int level = data[b * kI8BlockBytes + (j / 4) * 64 + c * 4 + j % 4] - 128;
      out[kk] = scale * static_cast<float>(level);
    } else {
      const char* block = panel + b * kQ4BlockBytes;
      uint16_t scale, min;
      std::memcpy(&scale, block + 2 * c, 2);
      std::memcpy(&min, block + 2 * kPanel + 2 * c, 2);
      const auto* data = reinterpret_cast<const uint8_t*>(block + 4 * kPanel);
      const int level =
          (data[((j % (kBlock / 2)) / 4) * 64 + c * 4 + j % 4] >> (j < kBlock / 2 ? 0 : 4)) & 0xf;
      out[kk] = F16ToF32(scale) * static_cast<float>(level) + F16ToF32(min);
    }
  }
}

#if defined(__x86_64__)

bool Available() { return CpuHasAvx2(); }

const char* Describe() {
  return "INT8/INT4 weights x int8 activations in blocks of 64 (AVX2 vpmaddubsw)";
}

void MatMul(const float* x, int64_t m, const WeightMatrix& w, float* y) {
  if (m <= 0 || w.rows <= 0) return;
  const Layout l(w.dtype, w.rows, w.cols);
  Activations& xa = Scratch();
  QuantizeActivations(x, m, w.cols, &xa);
  // Tasks: row blocks x runs of panels, enough for the pool to balance; the split changes no
  // result (see the header).
  constexpr int64_t kRowBlock = 64;
  const int64_t row_blocks = CeilDiv(m, kRowBlock);
  const int64_t row_block = CeilDiv(CeilDiv(m, row_blocks), 6) * 6;  // whole tiles of 2 and 3
  const int64_t want_tasks = 8 * CpuThreads();
  const int64_t panels_per_task =
      std::max<int64_t>(1, CeilDiv(l.panels, std::max<int64_t>(1, want_tasks / row_blocks)));
  const int64_t panel_runs = CeilDiv(l.panels, panels_per_task);
  ParallelFor(row_blocks * panel_runs, [&](int64_t task) {
    const int64_t r0 = (task / panel_runs) * row_block, r1 = std::min(m, r0 + row_block);
    const int64_t p0 = (task % panel_runs) * panels_per_task;
    if (r0 < r1) RunTask(xa, w, l, r0, r1, p0, std::min(l.panels, p0 + panels_per_task), y);
  });
}

#else  // not x86-64: no quantized kernels; the backend refuses quantized formats.

bool Available() { return false; }
const char* Describe() { return "no quantized kernels on this CPU"; }
void MatMul(const float*, int64_t, const WeightMatrix&, float*) { std::abort(); }

#endif

}  // namespace moe::kernels::quant
