// The packed kernels (see packed_matmul.h). The AVX-512 code lives in functions compiled for it
// with target attributes, never in a file built with -mavx512*: the rest of the program, and any
// inline function this file instantiates, must stay runnable on CPUs without AVX-512, and only
// run-time checks (Available, HasBf16Dot) lead here.
#include "kernels/cpu/packed_matmul.h"

#if defined(__x86_64__)
#include <immintrin.h>

#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "kernels/cpu/thread_pool.h"

// GCC 12's AVX-512 headers start some intrinsics from _mm512_undefined_*(), which -O2 reports
// as "may be used uninitialized" where they are inlined: a known false positive of that header.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#define MOE_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,f16c,fma")))
#define MOE_TARGET_AVX512_BF16 \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,f16c,fma,avx512bf16")))
#define MOE_TARGET_AMX \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,f16c,fma,amx-tile,amx-bf16")))

// The register tiles are arrays indexed by compile-time loops: fully unrolled, they live in
// registers; rolled (GCC's -O2 default), they would live on the stack.
#define MOE_UNROLL _Pragma("GCC unroll 16")

namespace moe::kernels::packed {
namespace {

constexpr int kVecs = kPanelCols / 16;  // accumulator vectors per row of a panel

// Rows of x per microkernel call: MR rows x kVecs vectors of accumulators stay in registers
// (24 of the 32), with room for the panel's vectors and a broadcast.
constexpr int kMaxRows = 8;
// k groups per cache block: the panel slice a microkernel call streams (kKBlock * 192 bytes for
// 16-bit weights) stays in L1/L2 while every row block of the task reuses it.
constexpr int64_t kKBlock = 256;
// Rows of x a task covers at most: the panel slice is read from memory once per row block, and
// the block's activations (kRowBlock x kKBlock groups) stay in L2. m is split into equal row
// blocks, so 260 rows run as 2 x 136 rather than 256 + 4.
constexpr int64_t kRowBlock = 256;

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// AllowAmx(false) before the first product keeps the tiles off.
std::atomic<bool> g_amx_allowed{true};

struct CpuFeatures {
  bool avx512 = false;
  bool bf16 = false;
  bool amx = false;
};

// AMX tiles need the CPU's AMX-TILE and AMX-BF16 (CPUID leaf 7, EDX bits 24 and 22) and the
// kernel's leave: Linux keeps the 8 KiB tile state off until a process asks for it
// (arch_prctl ARCH_REQ_XCOMP_PERM for XTILEDATA, once, for every thread of the process).
bool EnableAmx() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) == 0) return false;
  if ((edx & (1u << 24)) == 0 || (edx & (1u << 22)) == 0) return false;
  constexpr long kArchReqXcompPerm = 0x1023;
  constexpr long kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
}

// F16C from CPUID leaf 1 (ECX bit 29): clang 14's __builtin_cpu_supports has no "f16c".
bool HasF16c() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  return __get_cpuid(1, &eax, &ebx, &ecx, &edx) != 0 && (ecx & (1u << 29)) != 0;
}

const CpuFeatures& Features() {
  static const CpuFeatures features = [] {
    CpuFeatures f;
    __builtin_cpu_init();
    f.avx512 = __builtin_cpu_supports("avx512f") != 0 && __builtin_cpu_supports("avx512bw") != 0 &&
               __builtin_cpu_supports("avx512vl") != 0 && __builtin_cpu_supports("avx512dq") != 0 &&
               HasF16c() && __builtin_cpu_supports("fma") != 0;
    f.bf16 = f.avx512 && __builtin_cpu_supports("avx512bf16") != 0;
    f.amx = f.bf16 && g_amx_allowed.load() && EnableAmx();
    return f;
  }();
  return features;
}

// The shape of a packed matrix.
struct PackedLayout {
  int64_t n = 0, k = 0;      // w.rows, w.cols
  int64_t group = 1;         // KGroup(dtype)
  int64_t k_padded = 0;      // k rounded up to a whole group
  int64_t n_panels = 0;
  int64_t elem = 0;          // bytes per element
  int64_t panel_elems() const { return k_padded * kPanelCols; }
  int64_t groups() const { return k_padded / group; }

  explicit PackedLayout(const WeightMatrix& w)
      : n(w.rows), k(w.cols), group(KGroup(w.dtype)), k_padded(CeilDiv(w.cols, group) * group),
        n_panels(CeilDiv(w.rows, kPanelCols)), elem(DTypeSize(w.dtype)) {}
};

// Masks of the valid lanes of each accumulator vector of a panel whose first column is col0.
struct PanelMasks {
  __mmask16 v[kVecs];
  PanelMasks(int64_t col0, int64_t n) {
    MOE_UNROLL
    for (int i = 0; i < kVecs; ++i) {
      const int64_t valid = std::clamp<int64_t>(n - col0 - 16 * i, 0, 16);
      v[i] = static_cast<__mmask16>((1u << valid) - 1u);
    }
  }
};

// --- Microkernels: y[MR, kPanelCols] (+)= x[MR, groups] . panel[groups] -------------------------
// x points at the first row's first k group of the block, rows ldx kernel elements apart; panel
// at the block's first group. load: start from y (a later k block), else from zero. (Software
// prefetching of the next block was tried and measured no better than the hardware's own
// stream prefetcher, which the panels' front-to-back order suits.)

template <int MR>
MOE_TARGET_AVX512 inline void LoadTile(__m512 (&acc)[MR][kVecs], const float* y, int64_t ldy,
                                       const PanelMasks& masks, bool load) {
  MOE_UNROLL
  for (int i = 0; i < MR; ++i) {
    MOE_UNROLL
    for (int v = 0; v < kVecs; ++v)
      acc[i][v] = load ? _mm512_maskz_loadu_ps(masks.v[v], y + i * ldy + 16 * v) : _mm512_setzero_ps();
  }
}

template <int MR>
MOE_TARGET_AVX512 inline void StoreTile(const __m512 (&acc)[MR][kVecs], float* y, int64_t ldy,
                                        const PanelMasks& masks) {
  MOE_UNROLL
  for (int i = 0; i < MR; ++i) {
    MOE_UNROLL
    for (int v = 0; v < kVecs; ++v) _mm512_mask_storeu_ps(y + i * ldy + 16 * v, masks.v[v], acc[i][v]);
  }
}

// BF16 weights, activations as BF16 pairs: one vdpbf16ps per (row, vector, pair).
template <int MR>
MOE_TARGET_AVX512_BF16 void KernelBf16Dot(const uint32_t* x, int64_t ldx, const uint16_t* panel,
                                          int64_t groups, float* y, int64_t ldy,
                                          const PanelMasks& masks, bool load) {
  __m512 acc[MR][kVecs];
  LoadTile<MR>(acc, y, ldy, masks, load);
  for (int64_t q = 0; q < groups; ++q) {
    const uint16_t* wq = panel + q * (2 * kPanelCols);
    __m512bh w[kVecs];
    MOE_UNROLL
    for (int v = 0; v < kVecs; ++v) w[v] = (__m512bh)_mm512_load_si512(wq + 32 * v);
    MOE_UNROLL
    for (int i = 0; i < MR; ++i) {
      const __m512bh xv = (__m512bh)_mm512_set1_epi32(static_cast<int>(x[i * ldx + q]));
      MOE_UNROLL
      for (int v = 0; v < kVecs; ++v) acc[i][v] = _mm512_dpbf16_ps(acc[i][v], w[v], xv);
    }
  }
  StoreTile<MR>(acc, y, ldy, masks);
}

// BF16 weights widened exactly, float32 activations: the pair's first element, then its second.
template <int MR>
MOE_TARGET_AVX512 void KernelBf16Widen(const float* x, int64_t ldx, const uint16_t* panel,
                                       int64_t groups, float* y, int64_t ldy,
                                       const PanelMasks& masks, bool load) {
  __m512 acc[MR][kVecs];
  LoadTile<MR>(acc, y, ldy, masks, load);
  const __m512i high_half = _mm512_set1_epi32(static_cast<int>(0xffff0000u));
  for (int64_t q = 0; q < groups; ++q) {
    const uint16_t* wq = panel + q * (2 * kPanelCols);
    __m512 even[kVecs], odd[kVecs];
    MOE_UNROLL
    for (int v = 0; v < kVecs; ++v) {
      const __m512i pairs = _mm512_load_si512(wq + 32 * v);
      even[v] = _mm512_castsi512_ps(_mm512_slli_epi32(pairs, 16));
      odd[v] = _mm512_castsi512_ps(_mm512_and_si512(pairs, high_half));
    }
    MOE_UNROLL
    for (int i = 0; i < MR; ++i) {
      const __m512 x0 = _mm512_set1_ps(x[i * ldx + 2 * q]);
      const __m512 x1 = _mm512_set1_ps(x[i * ldx + 2 * q + 1]);
      MOE_UNROLL
      for (int v = 0; v < kVecs; ++v) acc[i][v] = _mm512_fmadd_ps(even[v], x0, acc[i][v]);
      MOE_UNROLL
      for (int v = 0; v < kVecs; ++v) acc[i][v] = _mm512_fmadd_ps(odd[v], x1, acc[i][v]);
    }
  }
  StoreTile<MR>(acc, y, ldy, masks);
}

// F16 weights widened with F16C (exact), or float32 weights; float32 activations.
template <int MR, bool kF16>
MOE_TARGET_AVX512 void KernelWide(const float* x, int64_t ldx, const void* panel, int64_t groups,
                                  float* y, int64_t ldy, const PanelMasks& masks, bool load) {
  __m512 acc[MR][kVecs];
  LoadTile<MR>(acc, y, ldy, masks, load);
  for (int64_t q = 0; q < groups; ++q) {
    __m512 w[kVecs];
    MOE_UNROLL
    for (int v = 0; v < kVecs; ++v) {
      if constexpr (kF16) {
        const auto* wq = static_cast<const uint16_t*>(panel) + q * kPanelCols;
        w[v] = _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(wq + 16 * v)));
      } else {
        w[v] = _mm512_load_ps(static_cast<const float*>(panel) + q * kPanelCols + 16 * v);
      }
    }
    MOE_UNROLL
    for (int i = 0; i < MR; ++i) {
      const __m512 xv = _mm512_set1_ps(x[i * ldx + q]);
      MOE_UNROLL
      for (int v = 0; v < kVecs; ++v) acc[i][v] = _mm512_fmadd_ps(w[v], xv, acc[i][v]);
    }
  }
  StoreTile<MR>(acc, y, ldy, masks);
}

enum class Path { kBf16Dot, kBf16Amx, kBf16Widen, kF16, kF32 };

// One call of the microkernel for MR rows of x.
template <int MR>
void CallKernel(Path path, const void* x, int64_t ldx, const void* panel, int64_t groups, float* y,
                int64_t ldy, const PanelMasks& masks, bool load) {
  switch (path) {
    case Path::kBf16Amx:  // runs as whole tasks (AmxTask), never through here
    case Path::kBf16Dot:
      return KernelBf16Dot<MR>(static_cast<const uint32_t*>(x), ldx, static_cast<const uint16_t*>(panel),
                               groups, y, ldy, masks, load);
    case Path::kBf16Widen:
      return KernelBf16Widen<MR>(static_cast<const float*>(x), ldx, static_cast<const uint16_t*>(panel),
                                 groups, y, ldy, masks, load);
    case Path::kF16:
      return KernelWide<MR, true>(static_cast<const float*>(x), ldx, panel, groups, y, ldy, masks,
                                  load);
    case Path::kF32:
      return KernelWide<MR, false>(static_cast<const float*>(x), ldx, panel, groups, y, ldy, masks,
                                   load);
  }
}

using KernelFn = void (*)(Path, const void*, int64_t, const void*, int64_t, float*, int64_t,
                          const PanelMasks&, bool);
constexpr KernelFn kKernels[kMaxRows + 1] = {nullptr,        CallKernel<1>, CallKernel<2>,
                                             CallKernel<3>, CallKernel<4>, CallKernel<5>,
                                             CallKernel<6>, CallKernel<7>, CallKernel<8>};

// Rounds one row x[k] to BF16 (round to nearest even) into out[k_padded], zero padded: 32 values
// per instruction.
MOE_TARGET_AVX512_BF16 void RoundRowToBf16(const float* x, int64_t k, int64_t k_padded, uint16_t* out) {
  int64_t c = 0;
  for (; c + 32 <= k; c += 32) {
    const __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + c + 16), _mm512_loadu_ps(x + c));
    _mm512_storeu_si512(out + c, (__m512i)v);
  }
  if (c < k) {
    const int64_t rest = k - c;
    const __mmask16 lo = static_cast<__mmask16>((1u << std::min<int64_t>(rest, 16)) - 1u);
    const __mmask16 hi = static_cast<__mmask16>((1u << std::clamp<int64_t>(rest - 16, 0, 16)) - 1u);
    const __m512bh v = _mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(hi, x + c + 16), _mm512_maskz_loadu_ps(lo, x + c));
    const __mmask32 store = static_cast<__mmask32>((uint64_t{1} << std::min<int64_t>(k_padded - c, 32)) - 1u);
    _mm512_mask_storeu_epi16(out + c, store, (__m512i)v);
  }
}

// --- AMX: the same panels through tile multiplies ----------------------------------------------
// TDPBF16PS multiplies a tile of 16 rows x 16 BF16 pairs of x by 16 pairs x 16 columns of
// weights into 16 x 16 float32 accumulators. A panel's k group is 48 columns of pairs, 192
// bytes, so the panel's rows of 64 bytes at a stride of 192 are exactly the B tiles of its three
// 16-column thirds: the layout needs no change. A task keeps 16 rows x 48 columns in tiles 0-2,
// x's 16 rows in tile 3 and the panel's thirds in tiles 4-6.
//
// Its products differ in the last bits from vdpbf16ps's (the two round their sums differently),
// so a process that has AMX uses it for every m: a row's result is still one chain over k in
// steps of 16 pairs, started from zero, independent of the other rows of its tile (rows past m
// are zeros), and the same alone or in any batch.

constexpr int kAmxRows = 16;        // rows of x per tile
constexpr int kAmxPairs = 16;       // k groups per tile multiply
constexpr int64_t kAmxKBlock = 128; // k groups per cache block: a 24 KiB panel slice stays in L1

struct TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t bytes_per_row[16] = {};
  uint8_t rows[16] = {};
};

MOE_TARGET_AMX void ConfigureTiles() {
  TileConfig config;
  for (int t = 0; t < 7; ++t) {
    config.bytes_per_row[t] = 64;
    config.rows[t] = 16;
  }
  _tile_loadconfig(&config);
}

// For rows [r0, r1) of x (r1 - r0 a multiple of 16; x holds zero rows up to there) and panels
// [p0, p1): y[r0..min(r1, m), panel columns] = x . panel. x: BF16 rows x_ld bytes apart, each
// zero padded to a whole number of tile steps.
MOE_TARGET_AMX void AmxTask(const char* x, int64_t x_ld, int64_t r0, int64_t r1, int64_t m,
                            const char* packed, const PackedLayout& l, int64_t p0, int64_t p1,
                            float* y) {
  constexpr int64_t kGroupBytes = 2 * kPanelCols * 2;  // 192
  constexpr int64_t kAccLd = kPanelCols * 4;           // bytes per row of the accumulators
  alignas(64) static thread_local float acc[kRowBlock * kPanelCols];
  // The last step of a k that is not a whole number of steps reads its pairs from here, zero
  // padded, rather than past the panel.
  alignas(64) static thread_local char tail[kAmxPairs * kGroupBytes];
  const int64_t groups = l.groups();
  ConfigureTiles();
  for (int64_t p = p0; p < p1; ++p) {
    const char* panel = packed + p * l.panel_elems() * l.elem;
    for (int64_t q0 = 0; q0 < groups; q0 += kAmxKBlock) {
      const int64_t q1 = std::min(groups, q0 + kAmxKBlock);
      for (int64_t i = r0; i < r1; i += kAmxRows) {
        char* c = reinterpret_cast<char*>(acc + (i - r0) * kPanelCols);
        if (q0 == 0) {
          _tile_zero(0);
          _tile_zero(1);
          _tile_zero(2);
        } else {
          _tile_loadd(0, c, kAccLd);
          _tile_loadd(1, c + 64, kAccLd);
          _tile_loadd(2, c + 128, kAccLd);
        }
        for (int64_t q = q0; q < q1; q += kAmxPairs) {
          const char* b = panel + q * kGroupBytes;
          if (q + kAmxPairs > groups) {
            std::memset(tail, 0, sizeof(tail));
            std::memcpy(tail, b, static_cast<size_t>((groups - q) * kGroupBytes));
            b = tail;
          }
          _tile_loadd(3, x + i * x_ld + q * 4, x_ld);
          _tile_loadd(4, b, kGroupBytes);
          _tile_loadd(5, b + 64, kGroupBytes);
          _tile_loadd(6, b + 128, kGroupBytes);
          _tile_dpbf16ps(0, 3, 4);
          _tile_dpbf16ps(1, 3, 5);
          _tile_dpbf16ps(2, 3, 6);
        }
        _tile_stored(0, c, kAccLd);
        _tile_stored(1, c + 64, kAccLd);
        _tile_stored(2, c + 128, kAccLd);
      }
    }
    const int64_t col0 = p * kPanelCols, cols = std::min<int64_t>(kPanelCols, l.n - col0);
    for (int64_t i = r0; i < std::min(r1, m); ++i)
      std::memcpy(y + i * l.n + col0, acc + (i - r0) * kPanelCols, static_cast<size_t>(cols) * 4);
  }
  _tile_release();
}

std::vector<uint16_t>& Bf16Scratch() {
  thread_local std::vector<uint16_t> buf;
  return buf;
}
std::vector<float>& F32Scratch() {
  thread_local std::vector<float> buf;
  return buf;
}

// Panel p of w, element by element: any shape.
void PackPanelScalar(const WeightMatrix& w, const PackedLayout& l, int64_t p, char* panel) {
  const char* src = static_cast<const char*>(w.data);
  const int64_t e = l.elem;
  std::memset(panel, 0, static_cast<size_t>(l.panel_elems() * e));
  for (int64_t c = 0; c < kPanelCols && p * kPanelCols + c < l.n; ++c) {
    const char* row = src + (p * kPanelCols + c) * l.k * e;
    for (int64_t kk = 0; kk < l.k; ++kk) {
      const int64_t at = ((kk / l.group) * kPanelCols + c) * l.group + kk % l.group;
      std::memcpy(panel + at * e, row + kk * e, static_cast<size_t>(e));
    }
  }
}

// Panel p of w when every row is a whole number of 32-bit units: one gather collects a unit of
// 16 columns. BF16 pairs and floats are the panel's groups as they are; an F16 pair is two
// groups, split into its halves.
MOE_TARGET_AVX512 void PackPanelGather(const WeightMatrix& w, const PackedLayout& l, int64_t p,
                                       char* panel) {
  const int64_t units = l.k * l.elem / 4;  // per row
  const auto* src = static_cast<const int32_t*>(w.data);
  const __m512i lane_rows = _mm512_mullo_epi32(
      _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
      _mm512_set1_epi32(static_cast<int>(units)));
  const PanelMasks valid(p * kPanelCols, l.n);
  const bool f16 = w.dtype == DType::kF16;
  for (int v = 0; v < kVecs; ++v) {
    const int64_t col = p * kPanelCols + 16 * v;
    // Rows past the end are masked off, never read (their base may lie past the matrix).
    const int32_t* rows = src + std::min(col, l.n - 1) * units;
    for (int64_t u = 0; u < units; ++u) {
      const __m512i g = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), valid.v[v], lane_rows,
                                                    rows + u, 4);
      if (!f16) {
        _mm512_store_si512(reinterpret_cast<int32_t*>(panel) + u * kPanelCols + 16 * v, g);
      } else {
        auto* half = reinterpret_cast<uint16_t*>(panel);
        _mm256_store_si256(reinterpret_cast<__m256i*>(half + (2 * u) * kPanelCols + 16 * v),
                           _mm512_cvtepi32_epi16(g));
        _mm256_store_si256(reinterpret_cast<__m256i*>(half + (2 * u + 1) * kPanelCols + 16 * v),
                           _mm512_cvtepi32_epi16(_mm512_srli_epi32(g, 16)));
      }
    }
  }
}

}  // namespace

bool Available() { return Features().avx512; }
bool HasBf16Dot() { return Features().bf16; }
bool HasAmx() { return Features().amx; }
void AllowAmx(bool allowed) { g_amx_allowed = allowed; }

Products Bf16Products() {
  return HasAmx() ? Products::kBf16Amx : HasBf16Dot() ? Products::kBf16Dot : Products::kFloat32;
}

const char* Describe(Products products) {
  switch (products) {
    case Products::kBf16Amx: return "BF16 weights x activations rounded to BF16, AMX tiles (tdpbf16ps)";
    case Products::kBf16Dot: return "BF16 weights x activations rounded to BF16 (vdpbf16ps)";
    case Products::kFloat32: break;
  }
  return "float32 products";
}

size_t PackedBytes(const WeightMatrix& w) {
  const PackedLayout l(w);
  return static_cast<size_t>(l.n_panels * l.panel_elems() * l.elem);
}

WeightMatrix Pack(const WeightMatrix& w, void* dst) {
  const PackedLayout l(w);
  char* out = static_cast<char*>(dst);
  ParallelFor(l.n_panels, [&](int64_t p) {
    char* panel = out + p * l.panel_elems() * l.elem;
    // Rows of 32-bit units (BF16 pairs, F16 pairs, floats) go through the gathers; an odd
    // 16-bit k (test shapes) element by element.
    if (l.k * l.elem % 4 == 0) {
      PackPanelGather(w, l, p, panel);
    } else {
      PackPanelScalar(w, l, p, panel);
    }
  });
  WeightMatrix packed = w;
  packed.data = dst;
  packed.layout = WeightLayout::kCpuPanels;
  return packed;
}

void MatMul(const float* x, int64_t m, const WeightMatrix& w, float* y, Products products) {
  if (m <= 0 || w.rows <= 0) return;
  const PackedLayout l(w);
  Path path;
  switch (w.dtype) {
    case DType::kBF16:
      // Checked here too: the tiles fault until EnableAmx has run (HasAmx runs it).
      path = products == Products::kBf16Amx && HasAmx()    ? Path::kBf16Amx
             : products == Products::kBf16Dot && HasBf16Dot() ? Path::kBf16Dot
                                                              : Path::kBf16Widen;
      break;
    case DType::kF16: path = Path::kF16; break;
    default: path = Path::kF32; break;
  }
  const bool amx = path == Path::kBf16Amx;
  // Activations in the kernel's form, rows padded by a cache line: rows k * 2 or k * 4 bytes
  // apart (multiples of 4 KiB for every Mixtral width) would all fall into one L1 set, and the
  // microkernel's 8 broadcast streams would evict each other. The kernel reads whole k groups
  // (AMX whole tile steps, and whole tiles of rows), so the padding is zero, as the weights' is.
  const void* xa = x;
  int64_t ldx = l.k;  // in the kernel's x elements
  if (path == Path::kBf16Dot || amx) {
    std::vector<uint16_t>& buf = Bf16Scratch();
    const int64_t k_zeroed = amx ? CeilDiv(l.k_padded, 2 * kAmxPairs) * 2 * kAmxPairs : l.k_padded;
    const int64_t row = k_zeroed + 32;  // BF16 elements
    const int64_t rows = amx ? CeilDiv(m, kAmxRows) * kAmxRows : m;
    buf.resize(static_cast<size_t>(rows * row));
    const int64_t rows_per_task = std::max<int64_t>(1, (int64_t{1} << 15) / l.k_padded);
    ParallelFor(CeilDiv(m, rows_per_task), [&](int64_t t) {
      for (int64_t i = t * rows_per_task; i < std::min(m, (t + 1) * rows_per_task); ++i)
        RoundRowToBf16(x + i * l.k, l.k, k_zeroed, buf.data() + i * row);
    });
    std::fill(buf.data() + m * row, buf.data() + rows * row, uint16_t{0});
    xa = buf.data();
    ldx = row / 2;
  } else if (m > 1 || l.k_padded != l.k) {
    std::vector<float>& buf = F32Scratch();
    const int64_t row = l.k_padded + 16;  // floats
    buf.resize(static_cast<size_t>(m * row));
    for (int64_t i = 0; i < m; ++i) {
      std::memcpy(buf.data() + i * row, x + i * l.k, l.k * sizeof(float));
      std::fill(buf.data() + i * row + l.k, buf.data() + i * row + l.k_padded, 0.0f);
    }
    xa = buf.data();
    ldx = row;
  }
  // The kernel's x elements are 4 bytes (a BF16 pair or a float); a k group is one of them, or
  // two floats for widened BF16.
  const int64_t x_group_elems = path == Path::kBf16Widen ? 2 : 1;

  // Tasks: row blocks x runs of panels, enough of them for the pool to balance. The split
  // changes no result (see the header).
  const int64_t rows_unit = amx ? kAmxRows : kMaxRows;
  const int64_t row_blocks = CeilDiv(m, kRowBlock);
  const int64_t row_block = CeilDiv(CeilDiv(m, row_blocks), rows_unit) * rows_unit;
  const int64_t want_tasks = 8 * CpuThreads();
  const int64_t panels_per_task =
      std::max<int64_t>(1, CeilDiv(l.n_panels, std::max<int64_t>(1, want_tasks / row_blocks)));
  const int64_t panel_runs = CeilDiv(l.n_panels, panels_per_task);
  const int64_t groups = l.groups();
  const char* packed = static_cast<const char*>(w.data);
  const int64_t group_bytes = l.group * kPanelCols * l.elem;
  ParallelFor(row_blocks * panel_runs, [&](int64_t task) {
    const int64_t r0 = (task / panel_runs) * row_block, r1 = std::min(m, r0 + row_block);
    if (r0 >= r1) return;
    const int64_t p0 = (task % panel_runs) * panels_per_task;
    const int64_t p1 = std::min(l.n_panels, p0 + panels_per_task);
    if (amx) {
      AmxTask(static_cast<const char*>(xa), ldx * 4, r0, CeilDiv(r1, kAmxRows) * kAmxRows, m,
              packed, l, p0, p1, y);
      return;
    }
    for (int64_t p = p0; p < p1; ++p) {
      const PanelMasks masks(p * kPanelCols, l.n);
      const char* panel = packed + p * l.panel_elems() * l.elem;
      for (int64_t q0 = 0; q0 < groups; q0 += kKBlock) {
        const int64_t nq = std::min(kKBlock, groups - q0);
        const char* panel_block = panel + q0 * group_bytes;
        for (int64_t i = r0; i < r1; i += kMaxRows) {
          const int rows = static_cast<int>(std::min<int64_t>(kMaxRows, r1 - i));
          const char* x_block = static_cast<const char*>(xa) + (i * ldx + q0 * x_group_elems) * 4;
          kKernels[rows](path, x_block, ldx, panel_block, nq, y + i * l.n + p * kPanelCols, l.n,
                         masks, q0 > 0);
        }
      }
    }
  });
}

}  // namespace moe::kernels::packed

#else  // not x86-64: no packed kernels; the backend checks Available() and keeps row-major weights.

#include <cstdlib>

namespace moe::kernels::packed {
bool Available() { return false; }
bool HasBf16Dot() { return false; }
bool HasAmx() { return false; }
void AllowAmx(bool) {}
Products Bf16Products() { return Products::kFloat32; }
const char* Describe(Products) { return "float32 products"; }
size_t PackedBytes(const WeightMatrix&) { return 0; }
WeightMatrix Pack(const WeightMatrix&, void*) { std::abort(); }
void MatMul(const float*, int64_t, const WeightMatrix&, float*, Products) { std::abort(); }
}  // namespace moe::kernels::packed

#endif
