// The NCCL data plane: rows move between GPUs with grouped ncclSend/ncclRecv on device buffers,
// over NVLink/PCIe inside a node and InfiniBand or sockets between nodes, never through host
// memory. Built only when CMake finds NCCL next to the CUDA toolkit.
#pragma once

#include <mpi.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "core/exchange/data_plane.h"
#include "kernels/backend.h"

namespace moe {

// Collective over `comm`: rank 0 makes NCCL's unique id and sends it with MPI_Bcast, then every
// rank joins the communicator on its backend's GPU (backend->cuda_device()). The communicator is
// non-blocking, so no NCCL call can hang a rank: set-up and every Flush poll with a deadline, and
// a deadline passed aborts the communicator. Fails when `backend` is not a CUDA backend, or when
// the set-up fails or takes longer than `timeout_seconds` (the error names the NCCL call).
absl::StatusOr<std::unique_ptr<DataPlane>> NewNcclDataPlane(kernels::Backend* backend,
                                                            MPI_Comm comm, double timeout_seconds);

// The NCCL library's version, e.g. "2.28.9" (works without a GPU).
std::string NcclVersionString();

}  // namespace moe
