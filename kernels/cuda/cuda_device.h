// Which GPU a process uses: the one it names, else the one its rank on the host picks.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace moe::kernels::cuda {

// GPUs this process can use; 0 when there are none or no driver (why says what CUDA answered).
int CudaDeviceCount(std::string* why = nullptr);

// requested >= 0 picks that GPU; -1 picks local_rank modulo the GPUs present. Fails with one line
// when there is no GPU or the index is out of range.
absl::StatusOr<int> ChooseCudaDevice(int requested, int local_rank);

// "NVIDIA H100 80GB HBM3", or "?" when it cannot be read.
std::string CudaDeviceName(int device);
// The name with memory, compute capability, SMs and PCI bus id, for moe-devices.
std::string CudaDeviceSummary(int device);

}  // namespace moe::kernels::cuda
