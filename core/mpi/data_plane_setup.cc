#include "core/mpi/data_plane_setup.h"

#include <mpi.h>

#include <cstring>

#include "absl/strings/str_cat.h"

#ifdef MOE_HAVE_NCCL
#include "core/mpi/nccl_data_plane.h"
#endif

namespace moe {

bool BuiltWithNccl() {
#ifdef MOE_HAVE_NCCL
  return true;
#else
  return false;
#endif
}

std::string NcclVersion() {
#ifdef MOE_HAVE_NCCL
  return NcclVersionString();
#else
  return "";
#endif
}

absl::StatusOr<std::unique_ptr<DataPlane>> ConnectDataPlane(Transport requested,
                                                            kernels::Backend* backend,
                                                            Messenger* host_messenger,
                                                            std::string* chosen) {
  int rank = 0, size = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  int32_t wanted = static_cast<int32_t>(requested);
  MPI_Bcast(&wanted, 1, MPI_INT32_T, 0, MPI_COMM_WORLD);

  const RankDevice mine = DescribeRank(backend, BuiltWithNccl());
  std::vector<RankDevice> all(static_cast<size_t>(size));
  MPI_Allgather(&mine, sizeof(RankDevice), MPI_BYTE, all.data(), sizeof(RankDevice), MPI_BYTE,
                MPI_COMM_WORLD);
  std::string note;
  absl::StatusOr<Transport> chosen_transport =
      ChooseTransport(static_cast<Transport>(wanted), all, &note);
  if (!chosen_transport.ok()) return chosen_transport.status();
  const Transport use = *chosen_transport;
  if (use == Transport::kMpi) {
    std::unique_ptr<DataPlane> plane = NewHostDataPlane(host_messenger);
    if (chosen != nullptr) *chosen = plane->Describe() + note;
    return plane;
  }

  absl::StatusOr<std::unique_ptr<DataPlane>> plane =
#ifdef MOE_HAVE_NCCL
      NewNcclDataPlane(backend, MPI_COMM_WORLD, /*timeout_seconds=*/120.0);
#else
      absl::InternalError("unreachable: NCCL chosen in a build without it");
#endif
  // Every rank learns every rank's failure, so all of them give up together.
  constexpr int kErrorBytes = 256;
  char error[kErrorBytes] = {};
  if (!plane.ok()) {
    std::strncpy(error, std::string(plane.status().message()).c_str(), kErrorBytes - 1);
  }
  std::vector<char> errors(static_cast<size_t>(size) * kErrorBytes);
  MPI_Allgather(error, kErrorBytes, MPI_CHAR, errors.data(), kErrorBytes, MPI_CHAR, MPI_COMM_WORLD);
  for (int r = 0; r < size; ++r) {
    const char* e = errors.data() + static_cast<size_t>(r) * kErrorBytes;
    if (e[0] != '\0') {
      return absl::UnavailableError(absl::StrCat("NCCL set-up failed on rank ", r, ": ", e));
    }
  }
  if (chosen != nullptr) *chosen = (*plane)->Describe() + note;
  return plane;
}

}  // namespace moe
