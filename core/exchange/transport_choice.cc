#include "core/exchange/transport_choice.h"

#include <unistd.h>

#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace moe {

absl::StatusOr<Transport> ParseTransport(absl::string_view name) {
  const std::string n = absl::AsciiStrToLower(name);
  if (n == "auto") return Transport::kAuto;
  if (n == "mpi") return Transport::kMpi;
  if (n == "nccl") return Transport::kNccl;
  return absl::InvalidArgumentError(
      absl::StrCat("--exchange must be auto, mpi or nccl, got '", name, "'"));
}

RankDevice DescribeRank(const kernels::Backend* backend, bool has_nccl) {
  RankDevice mine;
  mine.cuda_device = backend != nullptr ? backend->cuda_device() : -1;
  mine.has_nccl = has_nccl ? 1 : 0;
  if (backend != nullptr) {
    std::strncpy(mine.gpu, backend->physical_device().c_str(), sizeof(mine.gpu) - 1);
  }
  gethostname(mine.host, sizeof(mine.host) - 1);
  return mine;
}

std::string WhyNotNccl(const std::vector<RankDevice>& ranks) {
  // A rank off the GPU first: in a build without CUDA (so without NCCL) that is the real reason.
  for (size_t r = 0; r < ranks.size(); ++r) {
    if (ranks[r].cuda_device < 0) {
      return absl::StrCat("rank ", r, " does not compute on a GPU (--device cuda on every rank)");
    }
  }
  for (size_t r = 0; r < ranks.size(); ++r) {
    if (!ranks[r].has_nccl) return absl::StrCat("rank ", r, " was built without NCCL");
  }
  for (size_t r = 0; r < ranks.size(); ++r) {
    for (size_t s = r + 1; s < ranks.size(); ++s) {
      if (std::strncmp(ranks[r].gpu, ranks[s].gpu, sizeof(ranks[r].gpu)) == 0 &&
          std::strncmp(ranks[r].host, ranks[s].host, sizeof(ranks[r].host)) == 0) {
        return absl::StrCat("ranks ", r, " and ", s, " share GPU ", ranks[r].cuda_device, " (",
                            ranks[r].gpu, ") on host ", ranks[r].host,
                            "; NCCL needs one GPU per rank");
      }
    }
  }
  return "";
}

absl::StatusOr<Transport> ChooseTransport(Transport requested, const std::vector<RankDevice>& ranks,
                                          std::string* note) {
  const std::string why_not = WhyNotNccl(ranks);
  if (requested == Transport::kNccl && !why_not.empty()) {
    return absl::FailedPreconditionError(absl::StrCat("--exchange nccl: ", why_not));
  }
  if (requested != Transport::kAuto) return requested;
  if (note != nullptr) {
    *note = absl::StrCat(", chosen by --exchange auto: ",
                         why_not.empty() ? "every rank computes on a GPU of its own" : why_not);
  }
  return why_not.empty() ? Transport::kNccl : Transport::kMpi;
}

}  // namespace moe
