// Which data plane carries the cluster's rows (core/exchange/data_plane.h): the decision every rank
// makes from what all ranks report, kept apart from MPI so that it can be tested on its own.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "kernels/backend.h"

namespace moe {

// moe-coordinator --exchange.
enum class Transport : int32_t { kAuto = 0, kMpi = 1, kNccl = 2 };
absl::StatusOr<Transport> ParseTransport(absl::string_view name);  // auto | mpi | nccl

// What a rank tells the others (sent as bytes, so plain and fixed-size).
struct RankDevice {
  int32_t cuda_device = -1;  // -1: not computing on a GPU
  int32_t has_nccl = 0;      // this rank's build has the NCCL data plane
  char host[64] = {};
  char gpu[32] = {};  // PCI bus id: CUDA_VISIBLE_DEVICES may number one GPU differently
};

// This rank: its backend (null when it failed to start) and this host's name.
RankDevice DescribeRank(const kernels::Backend* backend, bool has_nccl);

// Why NCCL cannot carry these ranks' rows ("" when it can): a rank without NCCL or not on a GPU,
// or two ranks of one host on one physical GPU (NCCL refuses that).
std::string WhyNotNccl(const std::vector<RankDevice>& ranks);

// What `requested` comes to for these ranks: auto picks NCCL when it can, else MPI; nccl where it
// cannot work is an error saying why. note (optional) says why auto chose as it did.
absl::StatusOr<Transport> ChooseTransport(Transport requested, const std::vector<RankDevice>& ranks,
                                          std::string* note = nullptr);

}  // namespace moe
