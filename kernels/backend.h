// Backend: where activations live and which kernels run on them. The forward pass (ModelRunner)
// and the experts (ExpertHost) are written once against this interface; the CPU backend runs
// kernels/ops.h on host memory, the CUDA backend runs kernels/cuda/ on one GPU.
//
// Every pointer an op takes is in the backend's memory (host memory for the CPU, device memory
// for CUDA) unless its name says host. Ops are asynchronous on CUDA: they queue work and return.
// The first failure (a CUDA error, a shape the kernels do not take) is kept and every later op is
// skipped; Sync() waits for the queued work and returns that failure, so callers check at their
// boundaries rather than after every op.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/ops.h"
#include "kernels/quant.h"

namespace moe::kernels {

// What a weight is uploaded for.
enum class WeightUse : uint8_t {
  kMatMul,     // MatMul's w, in its own dtype
  kMatMulF32,  // MatMul's w widened to float32 (the router: choices must not flip on rounding)
  kLookup,     // Embed's table
};

// From now on, parallel loops this thread starts (packing an uploaded weight, say) run on this
// thread alone instead of on the shared CPU threads, which stay with the thread running the ops.
// For a background loader; the thread's own work then takes one core.
void UseCallingThreadOnly();

class Backend {
 public:
  virtual ~Backend() = default;

  // "cpu", or "cuda:0 (NVIDIA H100 80GB HBM3)".
  virtual std::string Describe() const = 0;
  // True when buffers are plain host memory, so callers may skip ToHost/ToDevice copies.
  virtual bool host_memory() const = 0;
  // The CUDA device this backend computes on, or -1 for the CPU (the NCCL exchange needs it).
  virtual int cuda_device() const { return -1; }
  // The physical GPU, the same in every process on its host whatever CUDA_VISIBLE_DEVICES says
  // (its PCI bus id, "0000:1B:00.0"); empty for the CPU.
  virtual std::string physical_device() const { return ""; }

  // Memory. Allocate returns null when memory runs out; that failure is not kept (the backend
  // stays usable), so the caller reports it.
  virtual void* Allocate(size_t bytes) = 0;
  virtual void Release(void* p) = 0;
  virtual void ToDevice(void* dst, const void* host_src, size_t bytes) = 0;
  virtual void ToHost(void* host_dst, const void* src, size_t bytes) = 0;
  virtual void Copy(void* dst, const void* src, size_t bytes) = 0;

  // A weight (row-major, as loaded) as this backend reads it for `use`. When the result's data
  // differs from w.data the backend made a copy, which lives as long as the backend, and no
  // longer reads w: the CPU packs weights for MatMul into its kernels' panels (on CPUs with
  // AVX-512; elsewhere, and for kLookup, it returns w itself, a view into the mapped checkpoint);
  // CUDA copies every weight to the device.
  // `format` (kMatMul only) holds a 16/32-bit w quantized (kernels/quant.h): the CPU quantizes
  // it straight into its quantized panels, so memory peaks at the quantized size. A w that is
  // already quantized (a quantized checkpoint) is repacked; it cannot change format. CUDA holds
  // no quantized weights yet and says so.
  virtual absl::StatusOr<WeightMatrix> Upload(const WeightMatrix& w,
                                              WeightUse use = WeightUse::kMatMul,
                                              WeightFormat format = WeightFormat::kAsStored) = 0;
  virtual absl::StatusOr<const float*> Upload(const std::vector<float>& v) = 0;
  // Frees the copy Upload made for `uploaded` (what Upload returned); nothing when Upload returned
  // a view. For experts that move to another worker (live re-placement): without it every
  // re-placement would leave its old copies behind. REQUIRES: no queued op reads it.
  virtual void FreeWeight(const WeightMatrix& uploaded) = 0;
  // Upload (and FreeWeight) may run on a thread other than the one running ops, one such thread
  // at a time, while ops run (a loader in the background of a serving loop); see
  // UseCallingThreadOnly.

  // out[i, :] = float32(table[tokens[i], :]).
  virtual void Embed(const WeightMatrix& table, const int32_t* tokens, int64_t n, float* out) = 0;
  // y[m, w.rows] = x[m, w.cols] @ w^T, float32 accumulation. With 16-bit w, CUDA rounds x to w's
  // dtype first (cuBLAS multiplies like types); the CPU does so for BF16 when made with
  // MatMulNumerics::kRoundActivations on a CPU with AVX512_BF16 (see kernels/ops.h).
  virtual void MatMul(const float* x, int64_t m, const WeightMatrix& w, float* y) = 0;
  // Whether MatMul with weights of this dtype multiplies x rounded to that dtype (quantized
  // weights always multiply x quantized per row and block: kernels/quant.h).
  virtual bool RoundsActivations(DType weights) const = 0;
  virtual void RmsNorm(const float* x, const float* weight, int64_t m, int64_t n, float eps,
                       float* y) = 0;
  virtual void ApplyRope(float* x, const int32_t* positions, int64_t m, int n_heads, int head_dim,
                         float rope_theta) = 0;
  virtual void Attention(const float* q, const float* k_cache, const float* v_cache,
                         const AttentionShape& shape, float* out) = 0;
  virtual void SiluMul(const float* gate, const float* up, int64_t n, float* out) = 0;
  // y[n] += x[n]
  virtual void AddInPlace(float* y, const float* x, int64_t n) = 0;
  // Per token: softmax over the experts, the top_k by falling probability (lower index first on
  // ties), renormalised to sum to 1. logits [n, n_experts] -> experts, weights [n, top_k].
  virtual void RouteTopK(const float* logits, int64_t n, int n_experts, int top_k,
                         int32_t* experts, float* weights) = 0;
  // Permute: out[r, :] = x[source_row[r], :] for r < n_rows.
  virtual void GatherRows(const float* x, const int64_t* source_row, int64_t n_rows,
                          int64_t hidden, float* out) = 0;
  // Unpermute and combine: residual[t, :] += sum_j weights[t, j] * expert_out[slot[t, j], :], the
  // choices summed in ascending expert order (as Hugging Face's loop over experts).
  virtual void CombineRows(const float* expert_out, const int64_t* slot, const int32_t* experts,
                           const float* weights, int64_t n_tokens, int top_k, int64_t hidden,
                           float* residual) = 0;

  // Sampling candidates. Per row of logits [rows, vocab]: the k largest logits by falling value,
  // ties to the lower id, NaN ranked as -inf (values hold the logits themselves): values and ids
  // [rows, k]; all_finite[row] = 1 when every logit of the row is finite, else 0. 1 <= k <= vocab,
  // and k <= max_sample_candidates().
  virtual void TopK(const float* logits, int64_t rows, int64_t vocab, int k, float* values,
                    int32_t* ids, int32_t* all_finite) = 0;
  virtual int max_sample_candidates() const = 0;

  // Waits for queued work; returns the first failure since the backend was made.
  virtual absl::Status Sync() = 0;
};

// A typed array in a backend's memory that grows on demand and never shrinks.
template <typename T>
class BackendArray {
 public:
  BackendArray() = default;
  explicit BackendArray(Backend* backend) : backend_(backend) {}
  BackendArray(BackendArray&& o) noexcept { *this = std::move(o); }
  BackendArray& operator=(BackendArray&& o) noexcept {
    if (this != &o) {
      Free();
      backend_ = o.backend_;
      data_ = o.data_;
      capacity_ = o.capacity_;
      o.data_ = nullptr;
      o.capacity_ = 0;
    }
    return *this;
  }
  BackendArray(const BackendArray&) = delete;
  BackendArray& operator=(const BackendArray&) = delete;
  ~BackendArray() { Free(); }

  // Room for at least n elements; contents are kept when keep is true. False when the backend
  // ran out of memory.
  bool Reserve(int64_t n, bool keep = false) {
    if (n <= capacity_) return true;
    T* fresh = static_cast<T*>(backend_->Allocate(static_cast<size_t>(n) * sizeof(T)));
    if (fresh == nullptr) return false;
    if (keep && data_ != nullptr) backend_->Copy(fresh, data_, static_cast<size_t>(capacity_) * sizeof(T));
    Free();
    data_ = fresh;
    capacity_ = n;
    return true;
  }
  T* data() { return data_; }
  const T* data() const { return data_; }
  int64_t capacity() const { return capacity_; }

 private:
  void Free() {
    if (data_ != nullptr) backend_->Release(data_);
    data_ = nullptr;
    capacity_ = 0;
  }
  Backend* backend_ = nullptr;
  T* data_ = nullptr;
  int64_t capacity_ = 0;
};

// Which backend a process runs on. The programs fill it from their flags (core/cli/cli.h).
struct DeviceOptions {
  std::string device = "cpu";  // "cpu" or "cuda"
  int cuda_device = -1;        // >= 0: that GPU; -1: local_rank modulo the GPUs present
  // The CPU's products with BF16 weights (kernels/ops.h); CUDA always rounds (cuBLAS).
  MatMulNumerics cpu_numerics = MatMulNumerics::kRoundActivations;
  // This process's rank among those on its host (the launcher knows it), so that ranks sharing a
  // host spread over its GPUs when none is named.
  int local_rank = 0;
};

// The backend named by options, or why it cannot be had: an unknown name, a build without CUDA,
// or no GPU (one line each; the caller says which of its settings it came from).
absl::StatusOr<std::unique_ptr<Backend>> MakeBackend(const DeviceOptions& options);

// A CPU backend. It owns the packed copies of the weights uploaded through it.
std::unique_ptr<Backend> NewCpuBackend(
    MatMulNumerics numerics = MatMulNumerics::kRoundActivations);

// True when this build has the CUDA backend (nvcc was found and MOE_CUDA was not OFF).
bool BuiltWithCuda();

// The GPUs this process sees, by index ("NVIDIA H100 80GB HBM3, 79.1 GiB, compute capability
// 9.0, 132 SMs, PCI 0000:1B:00.0"); empty without one, and `why` (optional) then says what CUDA
// answered or that the build has no CUDA.
std::vector<std::string> CudaDevices(std::string* why = nullptr);

}  // namespace moe::kernels
