// Which GPU a process uses: the one its local rank names (Open MPI's OMPI_COMM_WORLD_LOCAL_RANK),
// unless a flag names one.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace moe::kernels::cuda {

// GPUs this process can use; 0 when there are none or no driver (why says what CUDA answered).
int CudaDeviceCount(std::string* why = nullptr);

// requested >= 0 picks that GPU; -1 picks local rank modulo the GPUs present (0 outside mpirun).
// Fails with one line when there is no GPU or the index is out of range.
absl::StatusOr<int> ChooseCudaDevice(int requested);

// "NVIDIA H100 80GB HBM3", or "?" when it cannot be read.
std::string CudaDeviceName(int device);
// The name with memory, compute capability, SMs and PCI bus id, for moe-devices.
std::string CudaDeviceSummary(int device);

}  // namespace moe::kernels::cuda
