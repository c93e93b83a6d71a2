// The cluster's Messenger (core/exchange/messenger.h) over MPI_COMM_WORLD: non-blocking
// point-to-point, waited for with back-off (core/mpi/mpi_wait.h).
#pragma once

#include <memory>

#include "core/exchange/messenger.h"

namespace moe {

// REQUIRES: MPI is initialised, and stays so while the messenger and its groups live.
std::unique_ptr<Messenger> NewMpiMessenger();

}  // namespace moe
