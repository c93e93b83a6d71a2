#include "kernels/cuda/cuda_device.h"

#include <cuda_runtime_api.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace moe::kernels::cuda {

int CudaDeviceCount(std::string* why) {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    // No driver (cudaErrorInsufficientDriver) and no GPU (cudaErrorNoDevice) both mean none.
    if (why != nullptr) *why = absl::StrCat("cudaGetDeviceCount: ", cudaGetErrorString(e));
    cudaGetLastError();  // clear it, so later calls do not inherit it
    return 0;
  }
  if (count == 0 && why != nullptr) *why = "cudaGetDeviceCount found 0 devices";
  return count;
}

absl::StatusOr<int> ChooseCudaDevice(int requested, int local_rank) {
  std::string why;
  const int count = CudaDeviceCount(&why);
  if (count == 0) {
    return absl::FailedPreconditionError(absl::StrCat("no CUDA device is available (", why, ")"));
  }
  if (requested >= count) {
    return absl::InvalidArgumentError(
        absl::StrCat("CUDA device ", requested, " asked for, but only ", count, " are visible"));
  }
  if (requested >= 0) return requested;
  return std::max(local_rank, 0) % count;
}

std::string CudaDeviceName(int device) {
  cudaDeviceProp prop;
  if (cudaGetDeviceProperties(&prop, device) != cudaSuccess) return "?";
  return prop.name;
}

std::string CudaDeviceSummary(int device) {
  cudaDeviceProp prop;
  if (cudaGetDeviceProperties(&prop, device) != cudaSuccess) return "?";
  char bus_id[32] = {};
  cudaDeviceGetPCIBusId(bus_id, sizeof(bus_id), device);
  return absl::StrFormat("%s, %.1f GiB, compute capability %d.%d, %d SMs, PCI %s", prop.name,
                         prop.totalGlobalMem / double(1 << 30), prop.major, prop.minor,
                         prop.multiProcessorCount, bus_id);
}

}  // namespace moe::kernels::cuda
