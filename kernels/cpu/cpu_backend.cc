// The CPU backend: kernels/ops.h on host memory. On CPUs with AVX-512, weights for MatMul are
// packed once into the register-blocked kernels' panels (kernels/cpu/packed_matmul.h); elsewhere,
// and for embedding lookups, they stay where the checkpoint is mapped.
#include <sys/mman.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <numeric>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/backend.h"
#include "kernels/cpu/packed_matmul.h"
#include "kernels/cpu/quant_matmul.h"
#include "kernels/cpu/simd_kernels.h"

namespace moe::kernels {
namespace {

// Anonymous memory for packed weights, in transparent huge pages where the kernel allows them:
// the kernels stream gigabytes, and 2 MiB pages spare the TLB. Page aligned.
class WeightBuffer {
 public:
  static std::unique_ptr<WeightBuffer> Allocate(size_t bytes) {
    void* p = ::mmap(nullptr, std::max<size_t>(bytes, 1), PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return nullptr;
    // Advice only: without THP normal pages serve, and a kernel before 5.14 faults the pages in
    // one at a time as they are first written.
    ::madvise(p, bytes, MADV_HUGEPAGE);
    ::madvise(p, bytes, MADV_POPULATE_WRITE);
    return std::unique_ptr<WeightBuffer>(new WeightBuffer(p, bytes));
  }
  ~WeightBuffer() { ::munmap(data_, std::max<size_t>(bytes_, 1)); }
  WeightBuffer(const WeightBuffer&) = delete;
  WeightBuffer& operator=(const WeightBuffer&) = delete;
  void* data() const { return data_; }

 private:
  WeightBuffer(void* data, size_t bytes) : data_(data), bytes_(bytes) {}
  void* data_;
  size_t bytes_;
};

class CpuBackendImpl final : public Backend {
 public:
  explicit CpuBackendImpl(MatMulNumerics numerics) : numerics_(numerics) {}
  std::string Describe() const override { return "cpu"; }
  bool host_memory() const override { return true; }

  void* Allocate(size_t bytes) override {
    // 64-byte aligned for the SIMD loops; aligned_alloc wants a multiple of the alignment.
    return std::aligned_alloc(64, std::max<size_t>(64, (bytes + 63) / 64 * 64));
  }
  void Release(void* p) override { std::free(p); }
  void ToDevice(void* dst, const void* src, size_t bytes) override { Copy(dst, src, bytes); }
  void ToHost(void* dst, const void* src, size_t bytes) override { Copy(dst, src, bytes); }
  void Copy(void* dst, const void* src, size_t bytes) override {
    if (bytes > 0 && dst != src) std::memmove(dst, src, bytes);
  }

  absl::StatusOr<WeightMatrix> Upload(const WeightMatrix& w, WeightUse use,
                                      WeightFormat format) override {
    const DType held = HeldDType(w.dtype, format);
    if (IsQuantized(held)) return UploadQuantized(w, use, held);
    if (use == WeightUse::kLookup) return w;
    WeightMatrix source = w;
    std::unique_ptr<WeightBuffer> widened;
    if (use == WeightUse::kMatMulF32 && w.dtype != DType::kF32) {
      const int64_t n = w.rows * w.cols;
      widened = WeightBuffer::Allocate(static_cast<size_t>(n) * sizeof(float));
      if (widened == nullptr) return OutOfMemory(w, n * sizeof(float));
      simd::ConvertToF32(w.dtype, w.data, n, static_cast<float*>(widened->data()));
      source = WeightMatrix{DType::kF32, widened->data(), w.rows, w.cols};
    }
    if (!packed::Available()) {
      if (widened != nullptr) Keep(std::move(widened));
      return source;
    }
    const size_t bytes = packed::PackedBytes(source);
    std::unique_ptr<WeightBuffer> buffer = WeightBuffer::Allocate(bytes);
    if (buffer == nullptr) return OutOfMemory(w, bytes);
    const WeightMatrix packed = packed::Pack(source, buffer->data());
    Keep(std::move(buffer));
    return packed;
  }
  void FreeWeight(const WeightMatrix& uploaded) override {
    std::lock_guard<std::mutex> lock(buffers_mu_);
    for (auto it = buffers_.begin(); it != buffers_.end(); ++it) {
      if ((*it)->data() == uploaded.data) {
        buffers_.erase(it);
        return;
      }
    }
  }
  absl::StatusOr<const float*> Upload(const std::vector<float>& v) override { return v.data(); }

  void Embed(const WeightMatrix& table, const int32_t* tokens, int64_t n, float* out) override {
    const size_t row_bytes = static_cast<size_t>(table.cols) * DTypeSize(table.dtype);
    for (int64_t i = 0; i < n; ++i) {
      simd::ConvertToF32(table.dtype, static_cast<const char*>(table.data) + tokens[i] * row_bytes,
                         table.cols, out + i * table.cols);
    }
  }
  void MatMul(const float* x, int64_t m, const WeightMatrix& w, float* y) override {
    kernels::MatMul(x, m, w, y, numerics_);
  }
  bool RoundsActivations(DType weights) const override {
    return numerics_ == MatMulNumerics::kRoundActivations && weights == DType::kBF16 &&
           packed::Available() && packed::HasBf16Dot();
  }
  void RmsNorm(const float* x, const float* weight, int64_t m, int64_t n, float eps,
               float* y) override {
    kernels::RmsNorm(x, weight, m, n, eps, y);
  }
  void ApplyRope(float* x, const int32_t* positions, int64_t m, int n_heads, int head_dim,
                 float rope_theta) override {
    kernels::ApplyRope(x, positions, m, n_heads, head_dim, rope_theta);
  }
  void Attention(const float* q, const float* k_cache, const float* v_cache,
                 const AttentionShape& shape, float* out) override {
    kernels::Attention(q, k_cache, v_cache, shape, out);
  }
  void SiluMul(const float* gate, const float* up, int64_t n, float* out) override {
    kernels::SiluMul(gate, up, n, out);
  }
  void AddInPlace(float* y, const float* x, int64_t n) override {
    for (int64_t i = 0; i < n; ++i) y[i] += x[i];
  }
  void RouteTopK(const float* logits, int64_t n, int n_experts, int top_k, int32_t* experts,
                 float* weights) override {
    reference::RouteTopK(logits, n, n_experts, top_k, experts, weights);
  }
  void GatherRows(const float* x, const int64_t* source_row, int64_t n_rows, int64_t hidden,
                  float* out) override {
    reference::GatherRows(x, source_row, n_rows, hidden, out);
  }
  void CombineRows(const float* expert_out, const int64_t* slot, const int32_t* experts,
                   const float* weights, int64_t n_tokens, int top_k, int64_t hidden,
                   float* residual) override {
    reference::CombineRows(expert_out, slot, experts, weights, n_tokens, top_k, hidden, residual);
  }
  void TopK(const float* logits, int64_t rows, int64_t vocab, int k, float* values, int32_t* ids,
            int32_t* all_finite) override {
    reference::TopK(logits, rows, vocab, k, values, ids, all_finite);
  }
  // CUDA's limit, so that both backends take the same sampling paths.
  int max_sample_candidates() const override { return 1024; }
  absl::Status Sync() override { return absl::OkStatus(); }

 private:
  // A weight held quantized: packed into the quantized kernels' panels, quantized on the way
  // when it is 16/32-bit.
  absl::StatusOr<WeightMatrix> UploadQuantized(const WeightMatrix& w, WeightUse use, DType held) {
    if (use != WeightUse::kMatMul) {
      return absl::InvalidArgumentError(absl::StrCat(
          "a ", w.rows, "x", w.cols, " weight used for ",
          use == WeightUse::kLookup ? "embedding lookups" : "float32 products (the router)",
          " cannot be held as ", DTypeName(held)));
    }
    if (IsQuantized(w.dtype) && w.dtype != held) {
      return absl::InvalidArgumentError(absl::StrCat("a weight stored as ", DTypeName(w.dtype),
                                                     " cannot be held as ", DTypeName(held),
                                                     ": quantize the 16-bit checkpoint instead"));
    }
    if (!quant::Available()) {
      return absl::FailedPreconditionError(
          "quantized weights (int8, int4) need a CPU with AVX2, FMA and F16C; this one lacks them");
    }
    const size_t bytes = quant::PackedBytes(held, w.rows, w.cols);
    std::unique_ptr<WeightBuffer> buffer = WeightBuffer::Allocate(bytes);
    if (buffer == nullptr) return OutOfMemory(w, bytes);
    const WeightMatrix packed = IsQuantized(w.dtype)
                                    ? quant::Pack(w, buffer->data())
                                    : quant::QuantizeAndPack(w, held, buffer->data());
    Keep(std::move(buffer));
    return packed;
  }

  static absl::Status OutOfMemory(const WeightMatrix& w, size_t bytes) {
    return absl::ResourceExhaustedError(absl::StrCat("out of memory for a ", w.rows, "x", w.cols,
                                                     " weight's packed copy (", bytes, " bytes)"));
  }

  void Keep(std::unique_ptr<WeightBuffer> buffer) {
    std::lock_guard<std::mutex> lock(buffers_mu_);
    buffers_.push_back(std::move(buffer));
  }

  const MatMulNumerics numerics_;
  std::mutex buffers_mu_;  // Upload may run on a loader thread (Backend's contract)
  std::vector<std::unique_ptr<WeightBuffer>> buffers_;  // the copies Upload made
};

}  // namespace

std::unique_ptr<Backend> NewCpuBackend(MatMulNumerics numerics) {
  return std::make_unique<CpuBackendImpl>(numerics);
}

}  // namespace moe::kernels
