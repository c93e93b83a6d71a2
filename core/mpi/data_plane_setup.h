// Choosing and connecting the cluster's data plane (core/exchange/data_plane.h) over MPI: every
// rank describes its device, all make the same choice (core/exchange/transport_choice.h), and
// NCCL's communicator is set up where it is chosen.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "core/exchange/data_plane.h"
#include "core/exchange/messenger.h"
#include "core/exchange/transport_choice.h"
#include "kernels/backend.h"

namespace moe {

// Whether this build has the NCCL data plane, and its NCCL version ("2.28.9"; empty without).
bool BuiltWithNccl();
std::string NcclVersion();

// Collective over MPI_COMM_WORLD, on every rank after loading. Rank 0's `requested` decides
// (others' is ignored); `backend` is the rank's compute backend, null when it failed to start.
// Every rank describes itself to all, and all make the same ChooseTransport decision; every rank
// gets a plane of the same kind, or the same error (nccl requested but unusable, or NCCL's set-up
// failing on some rank, named). The host plane moves rows through `host_messenger` (MPI; not
// owned). `chosen` (optional) says what was chosen and why.
absl::StatusOr<std::unique_ptr<DataPlane>> ConnectDataPlane(Transport requested,
                                                            kernels::Backend* backend,
                                                            Messenger* host_messenger,
                                                            std::string* chosen = nullptr);

}  // namespace moe
