// The CUDA backend. Weights are copied to the device once, in their checkpoint dtype; activations
// are float32. GEMMs go through cublasGemmEx with float32 accumulation: float32 weights multiply
// float32 activations (no TF32, so results match the CPU to float32 precision); 16-bit weights
// multiply activations rounded to the same 16-bit type, the usual inference trade.
#include "kernels/cuda/cuda_backend.h"

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <mutex>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_device.h"
#include "kernels/cuda/cuda_kernels.h"

namespace moe::kernels::cuda {
namespace {

absl::Status CheckCublas(cublasStatus_t s, const char* what, const char* file, int line) {
  if (s == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  return CudaCallError(what, cublasGetStatusString(s), file, line);
}
#define MOE_CUBLAS_STATUS(expr) CheckCublas((expr), #expr, __FILE__, __LINE__)

cudaDataType_t CudaType(DType t) {
  switch (t) {
    case DType::kBF16: return CUDA_R_16BF;
    case DType::kF16: return CUDA_R_16F;
    default: return CUDA_R_32F;
  }
}

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(int device) : device_(device) {}
  ~CudaBackend() override {
    // Errors here have nowhere to go: the process is letting the GPU go.
    if (cudaSetDevice(device_) != cudaSuccess) return;
    for (void* p : owned_) cudaFree(p);
    if (scratch16_ != nullptr) cudaFree(scratch16_);
    if (attention_partial_ != nullptr) cudaFree(attention_partial_);
    if (cublas_ != nullptr) cublasDestroy(cublas_);
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }

  absl::Status Init() {
    Record(MOE_CUDA_STATUS(cudaSetDevice(device_)));
    Record(MOE_CUDA_STATUS(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking)));
    Record(MOE_CUBLAS_STATUS(cublasCreate(&cublas_)));
    if (error_.ok()) Record(MOE_CUBLAS_STATUS(cublasSetStream(cublas_, stream_)));
    // Pointer-mode host (alpha, beta on the host) and no TF32: the defaults, stated.
    if (error_.ok()) Record(MOE_CUBLAS_STATUS(cublasSetMathMode(cublas_, CUBLAS_DEFAULT_MATH)));
    name_ = CudaDeviceName(device_);
    char bus_id[32] = {};
    if (error_.ok()) Record(MOE_CUDA_STATUS(cudaDeviceGetPCIBusId(bus_id, sizeof(bus_id), device_)));
    bus_id_ = bus_id;
    return error_;
  }

  std::string Describe() const override { return absl::StrCat("cuda:", device_, " (", name_, ")"); }
  bool host_memory() const override { return false; }
  int cuda_device() const override { return device_; }
  std::string physical_device() const override { return bus_id_; }

  void* Allocate(size_t bytes) override {
    if (!Enter()) return nullptr;
    void* p = nullptr;
    if (cudaMalloc(&p, bytes == 0 ? 1 : bytes) != cudaSuccess) {
      cudaGetLastError();  // out of memory is not sticky in CUDA; the caller reports it
      return nullptr;
    }
    return p;
  }
  void Release(void* p) override {
    if (Enter()) Record(MOE_CUDA_STATUS(cudaFree(p)));
  }
  void ToDevice(void* dst, const void* src, size_t bytes) override {
    if (Enter()) Record(MOE_CUDA_STATUS(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream_)));
  }
  void ToHost(void* dst, const void* src, size_t bytes) override {
    if (!Enter()) return;
    Record(MOE_CUDA_STATUS(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream_)));
    Record(MOE_CUDA_STATUS(cudaStreamSynchronize(stream_)));  // the caller reads it next
  }
  void Copy(void* dst, const void* src, size_t bytes) override {
    if (Enter() && bytes > 0) {
      Record(MOE_CUDA_STATUS(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_)));
    }
  }

  absl::StatusOr<WeightMatrix> Upload(const WeightMatrix& w, WeightUse use,
                                      WeightFormat format) override {
    if (IsQuantized(HeldDType(w.dtype, format))) {
      return absl::UnimplementedError(
          absl::StrCat("the CUDA backend holds no quantized weights yet (asked for ",
                       DTypeName(HeldDType(w.dtype, format)),
                       "): run quantized experts on the CPU "
                       "(--device cpu) or hold them as stored"));
    }
    WeightMatrix out = w;
    const int64_t n = w.rows * w.cols;
    std::vector<float> widened;
    if (use == WeightUse::kMatMulF32 && w.dtype != DType::kF32) {
      widened.resize(static_cast<size_t>(n));
      ConvertRowToF32Scalar(w.dtype, w.data, n, widened.data());
      out.dtype = DType::kF32;
    }
    const size_t bytes = static_cast<size_t>(n) * DTypeSize(out.dtype);
    void* p = Allocate(bytes);
    if (p == nullptr) return OutOfMemory(bytes);
    Own(p);
    const void* src = widened.empty() ? w.data : widened.data();
    Record(MOE_CUDA_STATUS(cudaMemcpy(p, src, bytes, cudaMemcpyHostToDevice)));
    out.data = p;
    if (!error_.ok()) return error_;
    return out;
  }
  void FreeWeight(const WeightMatrix& uploaded) override {
    std::lock_guard<std::mutex> lock(owned_mu_);
    for (auto it = owned_.begin(); it != owned_.end(); ++it) {
      if (*it == uploaded.data) {
        Release(*it);  // cudaFree waits for queued work that may read it
        owned_.erase(it);
        return;
      }
    }
  }
  absl::StatusOr<const float*> Upload(const std::vector<float>& v) override {
    void* p = Allocate(v.size() * sizeof(float));
    if (p == nullptr) return OutOfMemory(v.size() * sizeof(float));
    Own(p);
    Record(MOE_CUDA_STATUS(cudaMemcpy(p, v.data(), v.size() * sizeof(float), cudaMemcpyHostToDevice)));
    if (!error_.ok()) return error_;
    return static_cast<const float*>(p);
  }

  void Embed(const WeightMatrix& table, const int32_t* tokens, int64_t n, float* out) override {
    if (Enter()) Record(MOE_CUDA_STATUS(LaunchEmbed(table.dtype, table.data, table.cols, tokens, n, out, stream_)));
  }

  bool RoundsActivations(DType weights) const override { return weights != DType::kF32; }
  void MatMul(const float* x, int64_t m, const WeightMatrix& w, float* y) override {
    if (!Enter() || m == 0) return;
    const void* b = x;
    if (w.dtype != DType::kF32) {
      if (!ReserveScratch16(m * w.cols)) return;
      Record(MOE_CUDA_STATUS(LaunchRoundTo16(w.dtype, x, m * w.cols, scratch16_, stream_)));
      b = scratch16_;
    }
    // cuBLAS is column-major. Row-major y[m, N] = x[m, K] w[N, K]^T is column-major
    // y^T[N, m] = w [N, K] x^T [K, m]; the row-major w is a column-major [K, N] (so op T) and the
    // row-major x a column-major [K, m] (op N).
    const float alpha = 1.0f, beta = 0.0f;
    const int n_out = static_cast<int>(w.rows), k = static_cast<int>(w.cols);
    Record(MOE_CUBLAS_STATUS(cublasGemmEx(cublas_, CUBLAS_OP_T, CUBLAS_OP_N, n_out,
                                          static_cast<int>(m), k, &alpha, w.data, CudaType(w.dtype),
                                          k, b, CudaType(w.dtype), k, &beta, y, CUDA_R_32F, n_out,
                                          CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT)));
  }
  void RmsNorm(const float* x, const float* weight, int64_t m, int64_t n, float eps,
               float* y) override {
    if (Enter()) Record(MOE_CUDA_STATUS(LaunchRmsNorm(x, weight, m, n, eps, y, stream_)));
  }
  void ApplyRope(float* x, const int32_t* positions, int64_t m, int n_heads, int head_dim,
                 float rope_theta) override {
    if (Enter()) Record(MOE_CUDA_STATUS(LaunchRope(x, positions, m, n_heads, head_dim, rope_theta, stream_)));
  }
  void Attention(const float* q, const float* k_cache, const float* v_cache,
                 const AttentionShape& shape, float* out) override {
    if (!Enter()) return;
    if (shape.head_dim > kMaxHeadDim || shape.n_kv_heads <= 0 ||
        shape.n_heads % shape.n_kv_heads != 0) {
      Record(absl::InvalidArgumentError(absl::StrCat(
          "CUDA attention takes head_dim <= ", kMaxHeadDim, " and heads a multiple of kv heads; got ",
          shape.head_dim, " and ", shape.n_heads, "/", shape.n_kv_heads)));
      return;
    }
    const int splits = AttentionSplits(shape);
    float* partial = nullptr;
    if (splits > 1) {
      const int64_t need = shape.n_new * shape.n_heads * splits * (shape.head_dim + 2);
      if (need > attention_partial_elems_) {
        if (attention_partial_ != nullptr) Release(attention_partial_);
        attention_partial_ = static_cast<float*>(Allocate(static_cast<size_t>(need) * sizeof(float)));
        attention_partial_elems_ = attention_partial_ != nullptr ? need : 0;
        if (attention_partial_ == nullptr) {
          Record(absl::ResourceExhaustedError(absl::StrCat(
              "cannot allocate ", need * 4, " bytes on ", Describe(), " for split attention")));
          return;
        }
      }
      partial = attention_partial_;
    }
    Record(MOE_CUDA_STATUS(LaunchAttention(q, k_cache, v_cache, shape, out, partial, stream_)));
  }
  void SiluMul(const float* gate, const float* up, int64_t n, float* out) override {
    if (Enter()) Record(MOE_CUDA_STATUS(LaunchSiluMul(gate, up, n, out, stream_)));
  }
  void AddInPlace(float* y, const float* x, int64_t n) override {
    if (Enter()) Record(MOE_CUDA_STATUS(LaunchAddInPlace(y, x, n, stream_)));
  }
  void RouteTopK(const float* logits, int64_t n, int n_experts, int top_k, int32_t* experts,
                 float* weights) override {
    if (!Enter()) return;
    if (n_experts > kMaxExperts || top_k > kMaxTopK || top_k < 1 || top_k > n_experts) {
      Record(absl::InvalidArgumentError(absl::StrCat("CUDA routing takes up to ", kMaxExperts,
                                                     " experts and top-k up to ", kMaxTopK, "; got ",
                                                     n_experts, " and ", top_k)));
      return;
    }
    Record(MOE_CUDA_STATUS(LaunchRouteTopK(logits, n, n_experts, top_k, experts, weights, stream_)));
  }
  void TopK(const float* logits, int64_t rows, int64_t vocab, int k, float* values, int32_t* ids,
            int32_t* all_finite) override {
    if (!Enter()) return;
    if (k < 1 || k > kMaxSampleCandidates || k > vocab || vocab > INT32_MAX) {
      Record(absl::InvalidArgumentError(absl::StrCat("CUDA top-k takes 1..", kMaxSampleCandidates,
                                                     " candidates of at most 2^31 logits; got ", k,
                                                     " of ", vocab)));
      return;
    }
    Record(MOE_CUDA_STATUS(LaunchTopK(logits, rows, vocab, k, values, ids, all_finite, stream_)));
  }
  int max_sample_candidates() const override { return kMaxSampleCandidates; }
  void GatherRows(const float* x, const int64_t* source_row, int64_t n_rows, int64_t hidden,
                  float* out) override {
    if (Enter()) Record(MOE_CUDA_STATUS(LaunchGatherRows(x, source_row, n_rows, hidden, out, stream_)));
  }
  void CombineRows(const float* expert_out, const int64_t* slot, const int32_t* experts,
                   const float* weights, int64_t n_tokens, int top_k, int64_t hidden,
                   float* residual) override {
    if (!Enter()) return;
    if (top_k > kMaxTopK) {
      Record(absl::InvalidArgumentError(absl::StrCat("CUDA combine takes top-k up to ", kMaxTopK)));
      return;
    }
    Record(MOE_CUDA_STATUS(LaunchCombineRows(expert_out, slot, experts, weights, n_tokens, top_k,
                                             hidden, residual, stream_)));
  }

  absl::Status Sync() override {
    if (Enter()) Record(MOE_CUDA_STATUS(cudaStreamSynchronize(stream_)));
    return error_;
  }

 private:
  // Makes this thread use our GPU (a per-thread setting: the step loop may run on any thread) and
  // says whether to go on: false once something has failed.
  bool Enter() {
    if (!error_.ok()) return false;
    thread_local int current = -1;
    if (current != device_) {
      Record(MOE_CUDA_STATUS(cudaSetDevice(device_)));
      if (!error_.ok()) return false;
      current = device_;
    }
    return true;
  }
  absl::Status OutOfMemory(size_t bytes) const {
    if (!error_.ok()) return error_;
    return absl::ResourceExhaustedError(
        absl::StrCat("cannot allocate ", bytes, " bytes on ", Describe(), " for the weights"));
  }
  void Record(absl::Status s) {
    if (error_.ok() && !s.ok()) error_ = std::move(s);
  }
  bool ReserveScratch16(int64_t n) {
    if (n <= scratch16_elems_) return true;
    if (scratch16_ != nullptr) Release(scratch16_);  // cudaFree waits for the GEMMs that read it
    scratch16_ = nullptr;
    scratch16_elems_ = 0;
    void* p = Allocate(static_cast<size_t>(n) * 2);
    if (p == nullptr) {
      Record(absl::ResourceExhaustedError(absl::StrCat(
          "cannot allocate ", n * 2, " bytes on ", Describe(), " for 16-bit GEMM inputs")));
      return false;
    }
    scratch16_ = p;
    scratch16_elems_ = n;
    return true;
  }

  int device_;
  std::string name_;
  std::string bus_id_;  // PCI bus id: names the physical GPU across processes
  cudaStream_t stream_ = nullptr;
  cublasHandle_t cublas_ = nullptr;
  absl::Status error_;
  void Own(void* p) {
    std::lock_guard<std::mutex> lock(owned_mu_);
    owned_.push_back(p);
  }
  std::mutex owned_mu_;            // Upload may run on a loader thread (Backend's contract)
  std::vector<void*> owned_;       // uploaded weights
  void* scratch16_ = nullptr;      // activations rounded to 16 bits for the GEMMs
  int64_t scratch16_elems_ = 0;
  float* attention_partial_ = nullptr;  // split attention's partial results
  int64_t attention_partial_elems_ = 0;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Backend>> NewCudaBackend(int device) {
  auto backend = std::make_unique<CudaBackend>(device);
  if (absl::Status s = backend->Init(); !s.ok()) return s;
  return std::unique_ptr<Backend>(std::move(backend));
}

}  // namespace moe::kernels::cuda
