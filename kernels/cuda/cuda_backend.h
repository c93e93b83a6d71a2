// The CUDA backend: kernels/cuda/ and cuBLAS on one GPU, one stream.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "kernels/backend.h"

namespace moe::kernels::cuda {

// A backend on GPU `device` (see ChooseCudaDevice). Fails with one line when it cannot start.
absl::StatusOr<std::unique_ptr<Backend>> NewCudaBackend(int device);

}  // namespace moe::kernels::cuda
