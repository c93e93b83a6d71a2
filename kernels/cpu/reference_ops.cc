// Plain, obviously-correct versions of every op: the yardstick the fast kernels are tested against.
// They follow Hugging Face's float32 arithmetic step by step. Only the MoE routing steps at the end
// (RouteTopK, GatherRows, CombineRows) also serve the CPU backend: they cost next to nothing.
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "kernels/ops.h"
#include "kernels/quant.h"

namespace moe::kernels::reference {

void MatMul(const float* x, int64_t m, const WeightMatrix& w, float* y) {
  std::vector<float> row(static_cast<size_t>(w.cols));
  for (int64_t j = 0; j < w.rows; ++j) {
    // Quantized weights dequantized exactly; x as it is (not quantized).
    DequantizeRow(w, j, row.data());
    for (int64_t i = 0; i < m; ++i) {
      double acc = 0;  // double: the reference should be the most accurate party in a comparison
      for (int64_t c = 0; c < w.cols; ++c) acc += static_cast<double>(x[i * w.cols + c]) * row[c];
      y[i * w.rows + j] = static_cast<float>(acc);
    }
  }
}

void RmsNorm(const float* x, const float* weight, int64_t m, int64_t n, float eps, float* y) {
  for (int64_t i = 0; i < m; ++i) {
    double ss = 0;
    for (int64_t c = 0; c < n; ++c) ss += static_cast<double>(x[i * n + c]) * x[i * n + c];
    const float inv = 1.0f / std::sqrt(static_cast<float>(ss / n) + eps);
    for (int64_t c = 0; c < n; ++c) y[i * n + c] = weight[c] * (x[i * n + c] * inv);
  }
}

void ApplyRope(float* x, const int32_t* positions, int64_t m, int n_heads, int head_dim,
               float rope_theta) {
  const int half = head_dim / 2;
  for (int64_t i = 0; i < m; ++i) {
    for (int h = 0; h < n_heads; ++h) {
      float* v = x + (i * n_heads + h) * head_dim;
      for (int d = 0; d < half; ++d) {
        // HF: inv_freq = 1 / theta^(2d/head_dim) in float32; angle = position * inv_freq.
        const float inv_freq =
            1.0f / std::pow(rope_theta, static_cast<float>(2 * d) / static_cast<float>(head_dim));
        const float angle = static_cast<float>(positions[i]) * inv_freq;
        const float c = std::cos(angle), s = std::sin(angle);
        const float a = v[d], b = v[d + half];
        v[d] = a * c - b * s;
        v[d + half] = b * c + a * s;
      }
    }
  }
}

void SiluMul(const float* gate, const float* up, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

void Softmax(float* x, int64_t n) {
  float mx = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < n; ++i) mx = std::max(mx, x[i]);
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - mx);
    sum += x[i];
  }
  for (int64_t i = 0; i < n; ++i) x[i] = static_cast<float>(x[i] / sum);
}

void Attention(const float* q, const float* k_cache, const float* v_cache,
               const AttentionShape& s, float* out) {
  const int group = s.n_heads / s.n_kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(s.head_dim));
  const int64_t q_stride = static_cast<int64_t>(s.n_heads) * s.head_dim;
  const int64_t kv_stride = static_cast<int64_t>(s.n_kv_heads) * s.head_dim;
  std::vector<float> p;
  for (int64_t i = 0; i < s.n_new; ++i) {
    const int64_t pos = s.first_pos + i;
    const int64_t lo = s.window > 0 ? std::max<int64_t>(0, pos - s.window + 1) : 0;
    for (int h = 0; h < s.n_heads; ++h) {
      const int kvh = h / group;
      const float* qv = q + i * q_stride + h * s.head_dim;
      p.assign(static_cast<size_t>(pos - lo + 1), 0.0f);
      for (int64_t t = lo; t <= pos; ++t) {
        const float* kv = k_cache + t * kv_stride + kvh * s.head_dim;
        double dot = 0;
        for (int d = 0; d < s.head_dim; ++d) dot += static_cast<double>(qv[d]) * kv[d];
        p[t - lo] = static_cast<float>(dot) * scale;
      }
      Softmax(p.data(), static_cast<int64_t>(p.size()));
      float* o = out + i * q_stride + h * s.head_dim;
      for (int d = 0; d < s.head_dim; ++d) {
        double acc = 0;
        for (int64_t t = lo; t <= pos; ++t)
          acc += static_cast<double>(p[t - lo]) * v_cache[t * kv_stride + kvh * s.head_dim + d];
        o[d] = static_cast<float>(acc);
      }
    }
  }
}

void RouteTopK(const float* logits, int64_t n, int n_experts, int top_k, int32_t* experts,
               float* weights) {
  std::vector<float> p(static_cast<size_t>(n_experts));
  std::vector<int32_t> order(static_cast<size_t>(n_experts));
  for (int64_t t = 0; t < n; ++t) {
    std::copy(logits + t * n_experts, logits + (t + 1) * n_experts, p.begin());
    Softmax(p.data(), n_experts);
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + top_k, order.end(), [&](int32_t a, int32_t b) {
      return p[a] > p[b] || (p[a] == p[b] && a < b);
    });
    float sum = 0;
    for (int j = 0; j < top_k; ++j) sum += p[order[j]];
    for (int j = 0; j < top_k; ++j) {
      experts[t * top_k + j] = order[j];
      weights[t * top_k + j] = p[order[j]] / sum;
    }
  }
}

void TopK(const float* logits, int64_t rows, int64_t vocab, int k, float* values, int32_t* ids,
          int32_t* all_finite) {
  std::vector<int32_t> order(static_cast<size_t>(vocab));
  for (int64_t r = 0; r < rows; ++r) {
    const float* x = logits + r * vocab;
    auto key = [x](int32_t i) { return std::isnan(x[i]) ? -std::numeric_limits<float>::infinity() : x[i]; };
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int32_t a, int32_t b) {
      return key(a) > key(b) || (key(a) == key(b) && a < b);
    });
    for (int j = 0; j < k; ++j) {
      values[r * k + j] = x[order[j]];
      ids[r * k + j] = order[j];
    }
    all_finite[r] = std::all_of(x, x + vocab, [](float v) { return std::isfinite(v); }) ? 1 : 0;
  }
}

void GatherRows(const float* x, const int64_t* source_row, int64_t n_rows, int64_t hidden,
                float* out) {
  for (int64_t r = 0; r < n_rows; ++r) {
    std::copy(x + source_row[r] * hidden, x + (source_row[r] + 1) * hidden, out + r * hidden);
  }
}

void CombineRows(const float* expert_out, const int64_t* slot, const int32_t* experts,
                 const float* weights, int64_t n_tokens, int top_k, int64_t hidden,
                 float* residual) {
  std::vector<float> moe_out(static_cast<size_t>(hidden));
  std::vector<int> choices(static_cast<size_t>(top_k));
  for (int64_t t = 0; t < n_tokens; ++t) {
    std::iota(choices.begin(), choices.end(), 0);
    std::sort(choices.begin(), choices.end(),
              [&](int a, int b) { return experts[t * top_k + a] < experts[t * top_k + b]; });
    std::fill(moe_out.begin(), moe_out.end(), 0.0f);
    for (int j : choices) {
      const float w = weights[t * top_k + j];
      const float* y = expert_out + slot[t * top_k + j] * hidden;
      for (int64_t c = 0; c < hidden; ++c) moe_out[c] += y[c] * w;
    }
    float* h = residual + t * hidden;
    for (int64_t c = 0; c < hidden; ++c) h[c] += moe_out[c];
  }
}

}  // namespace moe::kernels::reference
