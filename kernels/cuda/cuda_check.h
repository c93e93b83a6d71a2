// Error checking for CUDA, cuBLAS and NCCL calls: every call is wrapped, and a failure becomes an
// absl::Status naming the call and its file:line, so a report from a cluster says where it broke.
#pragma once

#include <cuda_runtime_api.h>

#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace moe::kernels::cuda {

inline absl::Status CudaCallError(const char* what, const std::string& why, const char* file,
                                  int line) {
  return absl::InternalError(absl::StrCat(file, ":", line, ": ", what, " failed: ", why));
}

inline absl::Status CheckCuda(cudaError_t e, const char* what, const char* file, int line) {
  if (e == cudaSuccess) return absl::OkStatus();
  return CudaCallError(what, absl::StrCat(cudaGetErrorName(e), " (", cudaGetErrorString(e), ")"),
                       file, line);
}

}  // namespace moe::kernels::cuda

// The status of a CUDA runtime call (or of a kernel launch: our launchers return
// cudaGetLastError()).
#define MOE_CUDA_STATUS(expr) ::moe::kernels::cuda::CheckCuda((expr), #expr, __FILE__, __LINE__)

#define MOE_CUDA_RETURN_IF_ERROR(expr)                        \
  do {                                                        \
    ::absl::Status moe_cuda_status_ = MOE_CUDA_STATUS(expr);  \
    if (!moe_cuda_status_.ok()) return moe_cuda_status_;     \
  } while (0)
