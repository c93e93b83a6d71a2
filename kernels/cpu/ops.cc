// The fast CPU versions of kernels/ops.h: the packed AVX-512 kernels for products where the CPU
// has them, Highway for memory-bound loops, OpenBLAS for attention's products and the fallback
// products, the shared thread pool for parallelism.
#include "kernels/ops.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cpu/packed_matmul.h"
#include "kernels/cpu/quant_matmul.h"
#include "kernels/cpu/simd_kernels.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/quant.h"

namespace moe::kernels {
namespace {

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Scratch that lives as long as the thread, so hot loops never allocate.
std::vector<float>& ThreadScratch(size_t n) {
  thread_local std::vector<float> buf;
  if (buf.size() < n) buf.resize(n);
  return buf;
}

// Row-major matrices this small (a router: one row per expert) always take the GEMV, whose rows
// come out the same for every m: routing then does not depend on which rows share the batch, on
// CPUs without the packed kernels too. Cheap: such a product is a sliver of a step.
constexpr int64_t kGemvAlwaysRows = 256;

// Small batches (decode): stream every weight row once, converting on the fly.
void MatMulGemv(const float* x, int64_t m, const WeightMatrix& w, float* y) {
  const int64_t threads = CpuThreads();
  // Several blocks per thread so a slow core does not hold everyone back; multiples of 4 rows
  // keep the 4-stream inner kernel busy.
  // At least ~64K weights per block: waking a thread costs more than reading fewer.
  const int64_t min_rows = CeilDiv(CeilDiv(int64_t{1} << 16, std::max<int64_t>(w.cols, 1)), 4) * 4;
  const int64_t block =
      std::max({min_rows, int64_t{16}, CeilDiv(CeilDiv(w.rows, threads * 4), 4) * 4});
  const int64_t n_blocks = CeilDiv(w.rows, block);
  ParallelFor(n_blocks, [&](int64_t b) {
    const int64_t begin = b * block, end = std::min(w.rows, begin + block);
    for (int64_t t = 0; t < m; t += simd::kMaxGemvRows) {
      const int rows = static_cast<int>(std::min<int64_t>(simd::kMaxGemvRows, m - t));
      simd::GemvRows(x + t * w.cols, rows, w, begin, end, y + t * w.rows, w.rows);
    }
  });
}

// Large batches (prefill, busy experts): compute bound. Each task widens a tile of weight rows to
// float32 (kept in L2) and multiplies it with OpenBLAS's single-threaded sgemm; the tile's
// conversion is paid once for all m rows of x.
void MatMulTiled(const float* x, int64_t m, const WeightMatrix& w, float* y) {
  const int64_t k = w.cols;
  // ~1 MiB of float32 weights per tile, a multiple of 16 rows.
  int64_t tile = std::clamp<int64_t>((1 << 18) / std::max<int64_t>(k, 1), 16, 512) / 16 * 16;
  const int64_t threads = CpuThreads();
  if (CeilDiv(w.rows, tile) < threads * 2) tile = std::max<int64_t>(16, CeilDiv(w.rows, threads * 2));
  const int64_t n_tiles = CeilDiv(w.rows, tile);
  const int64_t elem = DTypeSize(w.dtype);
  ParallelFor(n_tiles, [&](int64_t t) {
    const int64_t j0 = t * tile, rows = std::min(tile, w.rows - j0);
    const void* src = static_cast<const char*>(w.data) + j0 * k * elem;
    const float* wt;
    if (w.dtype == DType::kF32) {
      wt = static_cast<const float*>(src);
    } else {
      std::vector<float>& buf = ThreadScratch(static_cast<size_t>(rows * k));
      simd::ConvertToF32(w.dtype, src, rows * k, buf.data());
      wt = buf.data();
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(m),
                static_cast<int>(rows), static_cast<int>(k), 1.0f, x, static_cast<int>(k), wt,
                static_cast<int>(k), 0.0f, y + j0, static_cast<int>(w.rows));
  });
}

}  // namespace

void MatMul(const float* x, int64_t m, const WeightMatrix& w, float* y, MatMulNumerics numerics) {
  if (m <= 0 || w.rows <= 0) return;
  if (IsQuantized(w.dtype)) {
    // Packed by the backend; a row-major quantized matrix (a test's) takes the reference.
    if (w.layout == WeightLayout::kCpuPanels) {
      quant::MatMul(x, m, w, y);
    } else {
      reference::QuantizedMatMul(x, m, w, y);
    }
  } else if (w.layout == WeightLayout::kCpuPanels) {
    packed::MatMul(x, m, w, y,
                   numerics == MatMulNumerics::kRoundActivations ? packed::Bf16Products()
                                                                 : packed::Products::kFloat32);
  } else if (m <= simd::kMaxGemvRows || w.rows <= kGemvAlwaysRows) {
    MatMulGemv(x, m, w, y);
  } else {
    MatMulTiled(x, m, w, y);
  }
}

void RmsNorm(const float* x, const float* weight, int64_t m, int64_t n, float eps, float* y) {
  const int64_t per_task = std::max<int64_t>(1, (1 << 16) / std::max<int64_t>(n, 1));
  ParallelFor(CeilDiv(m, per_task), [&](int64_t t) {
    for (int64_t i = t * per_task; i < std::min(m, (t + 1) * per_task); ++i)
      simd::RmsNormRow(x + i * n, weight, n, eps, y + i * n);
  });
}

void ApplyRope(float* x, const int32_t* positions, int64_t m, int n_heads, int head_dim,
               float rope_theta) {
  const int half = head_dim / 2;
  std::vector<float> inv_freq(static_cast<size_t>(half));
  for (int d = 0; d < half; ++d)
    inv_freq[d] =
        1.0f / std::pow(rope_theta, static_cast<float>(2 * d) / static_cast<float>(head_dim));
  ParallelFor(m, [&](int64_t i) {
    // One cos/sin table per row, shared by all heads.
    std::vector<float>& cs = ThreadScratch(static_cast<size_t>(2 * half));
    for (int d = 0; d < half; ++d) {
      const float angle = static_cast<float>(positions[i]) * inv_freq[d];
      cs[d] = std::cos(angle);
      cs[half + d] = std::sin(angle);
    }
    for (int h = 0; h < n_heads; ++h) {
      float* v = x + (i * n_heads + h) * head_dim;
      for (int d = 0; d < half; ++d) {
        const float a = v[d], b = v[d + half], c = cs[d], s = cs[half + d];
        v[d] = a * c - b * s;
        v[d + half] = b * c + a * s;
      }
    }
  });
}

void SiluMul(const float* gate, const float* up, int64_t n, float* out) {
  constexpr int64_t kChunk = 1 << 14;
  ParallelFor(CeilDiv(n, kChunk), [&](int64_t t) {
    const int64_t b = t * kChunk;
    simd::SiluMul(gate + b, up + b, std::min(kChunk, n - b), out + b);
  });
}

void Softmax(float* x, int64_t n) {
  float mx = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < n; ++i) mx = std::max(mx, x[i]);
  float sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - mx);
    sum += x[i];
  }
  const float inv = 1.0f / sum;
  for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

namespace {

// Decode (a few new rows per sequence): row by row, straight from the cache, one task per KV head
// and its query heads. Two BLAS calls per head and row cost more than the arithmetic of a row.
void AttentionFewRows(const float* q, const float* k_cache, const float* v_cache,
                      const AttentionShape& s, float* out) {
  const int group = s.n_heads / s.n_kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(s.head_dim));
  const int64_t q_stride = static_cast<int64_t>(s.n_heads) * s.head_dim;
  const int64_t kv_stride = static_cast<int64_t>(s.n_kv_heads) * s.head_dim;
  ParallelFor(s.n_kv_heads, [&](int64_t kvh) {
    std::vector<float>& scores = ThreadScratch(static_cast<size_t>(s.first_pos + s.n_new));
    for (int64_t i = 0; i < s.n_new; ++i) {
      const int64_t pos = s.first_pos + i;
      const int64_t lo = s.window > 0 ? std::max<int64_t>(0, pos - s.window + 1) : 0;
      const float* k = k_cache + lo * kv_stride + kvh * s.head_dim;
      const float* v = v_cache + lo * kv_stride + kvh * s.head_dim;
      for (int g = 0; g < group; ++g) {
        const int64_t h = kvh * group + g;
        simd::AttendRow(q + i * q_stride + h * s.head_dim, k, v, kv_stride, pos - lo + 1,
                        s.head_dim, scale, scores.data(), out + i * q_stride + h * s.head_dim);
      }
    }
  });
}

// Rows per sequence up to which AttentionFewRows runs.
constexpr int64_t kFewRows = 8;

}  // namespace

void Attention(const float* q, const float* k_cache, const float* v_cache,
               const AttentionShape& s, float* out) {
  if (s.n_new <= kFewRows) return AttentionFewRows(q, k_cache, v_cache, s, out);
  // Query rows go in blocks, each against only the keys some row of the block can see, so the
  // score scratch is at most kQueryBlock x context per thread, however long the prompt.
  constexpr int64_t kQueryBlock = 256;
  const int group = s.n_heads / s.n_kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(s.head_dim));
  const int q_stride = s.n_heads * s.head_dim;
  const int kv_stride = s.n_kv_heads * s.head_dim;
  const int64_t n_blocks = CeilDiv(s.n_new, kQueryBlock);
  ParallelFor(s.n_heads * n_blocks, [&](int64_t task) {
    const int64_t h = task % s.n_heads, b0 = (task / s.n_heads) * kQueryBlock;
    const int64_t rows = std::min(kQueryBlock, s.n_new - b0);
    const int kvh = static_cast<int>(h) / group;
    const int64_t first = s.first_pos + b0;  // position of the block's first row
    const int64_t key_lo = s.window > 0 ? std::max<int64_t>(0, first - s.window + 1) : 0;
    const int64_t n_keys = first + rows - key_lo;
    std::vector<float>& scores = ThreadScratch(static_cast<size_t>(rows * n_keys));
    // scores[rows, n_keys] = scale * q_h @ k_kvh^T
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows),
                static_cast<int>(n_keys), s.head_dim, scale, q + b0 * q_stride + h * s.head_dim,
                q_stride, k_cache + key_lo * kv_stride + kvh * s.head_dim, kv_stride, 0.0f,
                scores.data(), static_cast<int>(n_keys));
    for (int64_t i = 0; i < rows; ++i) {
      const int64_t pos = first + i;
      const int64_t lo = s.window > 0 ? std::max<int64_t>(key_lo, pos - s.window + 1) : 0;
      float* row = scores.data() + i * n_keys;
      const int64_t a = lo - key_lo, b = pos - key_lo + 1;  // visible keys: [a, b)
      std::fill(row, row + a, 0.0f);
      Softmax(row + a, b - a);
      std::fill(row + b, row + n_keys, 0.0f);
    }
    // out_h[rows, head_dim] = p @ v_kvh
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(rows), s.head_dim,
                static_cast<int>(n_keys), 1.0f, scores.data(), static_cast<int>(n_keys),
                v_cache + key_lo * kv_stride + kvh * s.head_dim, kv_stride, 0.0f,
                out + b0 * q_stride + h * s.head_dim, q_stride);
  });
}

}  // namespace moe::kernels
