#include "kernels/backend.h"

#include "absl/strings/str_cat.h"

#ifdef MOE_HAVE_CUDA
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_device.h"
#endif

namespace moe::kernels {

bool BuiltWithCuda() {
#ifdef MOE_HAVE_CUDA
  return true;
#else
  return false;
#endif
}

std::vector<std::string> CudaDevices(std::string* why) {
  std::vector<std::string> names;
#ifdef MOE_HAVE_CUDA
  const int n = cuda::CudaDeviceCount(why);
  for (int d = 0; d < n; ++d) names.push_back(cuda::CudaDeviceSummary(d));
#else
  if (why != nullptr) *why = "this build has no CUDA backend";
#endif
  return names;
}

absl::StatusOr<std::unique_ptr<Backend>> MakeBackend(const DeviceOptions& options) {
  if (options.device == "cpu") return NewCpuBackend(options.cpu_numerics);
  if (options.device != "cuda") {
    return absl::InvalidArgumentError(absl::StrCat("unknown device '", options.device, "' (cpu or cuda)"));
  }
#ifdef MOE_HAVE_CUDA
  absl::StatusOr<int> device = cuda::ChooseCudaDevice(options.cuda_device, options.local_rank);
  if (!device.ok()) return device.status();
  return cuda::NewCudaBackend(*device);
#else
  return absl::FailedPreconditionError(
      "this build has no CUDA backend (configured with MOE_CUDA=OFF or without nvcc)");
#endif
}

}  // namespace moe::kernels
