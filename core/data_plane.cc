#include "core/data_plane.h"

#include <unistd.h>

#include <climits>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "core/mpi_wait.h"

#ifdef MOE_HAVE_NCCL
#include "core/nccl_data_plane.h"
#endif

namespace moe {
namespace {

constexpr int kRowsTag = 120;  // one tag: order within a (peer, direction) is MPI's to keep

class MpiDataPlane final : public DataPlane {
 public:
  std::string Describe() const override { return "MPI (host memory)"; }
  bool Reads(const kernels::Backend& memory) const override { return memory.host_memory(); }
  bool device_memory() const override { return false; }

  void Send(const float* data, int64_t count, int peer) override {
    if (!Fits(count)) return;
    MPI_Request req;
    MPI_Isend(data, static_cast<int>(count), MPI_FLOAT, peer, kRowsTag, MPI_COMM_WORLD, &req);
    requests_.push_back(req);
    peers_.push_back(peer);
  }
  void Recv(float* data, int64_t count, int peer) override {
    if (!Fits(count)) return;
    MPI_Request req;
    MPI_Irecv(data, static_cast<int>(count), MPI_FLOAT, peer, kRowsTag, MPI_COMM_WORLD, &req);
    requests_.push_back(req);
    peers_.push_back(peer);
  }
  absl::Status Flush(double timeout_seconds, const std::string& what) override {
    absl::Status status = oversized_.empty()
                              ? WaitAll(&requests_, peers_, timeout_seconds, what)
                              : absl::ResourceExhaustedError(absl::StrCat(what, ": ", oversized_));
    requests_.clear();
    peers_.clear();
    oversized_.clear();
    return status;
  }

 private:
  // One MPI message holds at most INT_MAX elements. The exchange checks sizes before it posts
  // anything; this is the backstop.
  bool Fits(int64_t count) {
    if (count <= INT_MAX) return true;
    oversized_ = absl::StrCat("a transfer of ", count, " floats exceeds one MPI message");
    return false;
  }
  std::vector<MPI_Request> requests_;
  std::vector<int> peers_;
  std::string oversized_;
};

// What every rank tells the others before the transport is chosen.
struct RankDevice {
  int32_t cuda_device = -1;  // -1: not computing on a GPU
  int32_t has_nccl = 0;
  char host[64] = {};
  char gpu[32] = {};         // PCI bus id: CUDA_VISIBLE_DEVICES may number one GPU differently
};

// Why NCCL cannot carry this cluster's rows ("" when it can).
std::string WhyNotNccl(const std::vector<RankDevice>& ranks) {
  for (size_t r = 0; r < ranks.size(); ++r) {
    if (!ranks[r].has_nccl) return absl::StrCat("rank ", r, " was built without NCCL");
    if (ranks[r].cuda_device < 0) {
      return absl::StrCat("rank ", r, " does not compute on a GPU (--device cuda on every rank)");
    }
  }
  for (size_t r = 0; r < ranks.size(); ++r) {
    for (size_t s = r + 1; s < ranks.size(); ++s) {
      if (std::strncmp(ranks[r].gpu, ranks[s].gpu, sizeof(ranks[r].gpu)) == 0 &&
          std::strncmp(ranks[r].host, ranks[s].host, sizeof(ranks[r].host)) == 0) {
        return absl::StrCat("ranks ", r, " and ", s, " share GPU ", ranks[r].cuda_device, " (",
                            ranks[r].gpu, ") on host ", ranks[r].host, "; NCCL needs one GPU per rank");
      }
    }
  }
  return "";
}

}  // namespace

std::unique_ptr<DataPlane> NewMpiDataPlane() { return std::make_unique<MpiDataPlane>(); }

absl::StatusOr<Transport> ParseTransport(absl::string_view name) {
  const std::string n = absl::AsciiStrToLower(name);
  if (n == "auto") return Transport::kAuto;
  if (n == "mpi") return Transport::kMpi;
  if (n == "nccl") return Transport::kNccl;
  return absl::InvalidArgumentError(
      absl::StrCat("--exchange must be auto, mpi or nccl, got '", name, "'"));
}

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
                                                            std::string* chosen) {
  int rank = 0, size = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  int32_t wanted = static_cast<int32_t>(requested);
  MPI_Bcast(&wanted, 1, MPI_INT32_T, 0, MPI_COMM_WORLD);

  RankDevice mine;
  mine.cuda_device = backend != nullptr ? backend->cuda_device() : -1;
  mine.has_nccl = BuiltWithNccl() ? 1 : 0;
  if (backend != nullptr) {
    std::strncpy(mine.gpu, backend->physical_device().c_str(), sizeof(mine.gpu) - 1);
  }
  gethostname(mine.host, sizeof(mine.host) - 1);
  std::vector<RankDevice> all(static_cast<size_t>(size));
  MPI_Allgather(&mine, sizeof(RankDevice), MPI_BYTE, all.data(), sizeof(RankDevice), MPI_BYTE,
                MPI_COMM_WORLD);
  const std::string why_not = WhyNotNccl(all);
  std::string note;
  Transport use = static_cast<Transport>(wanted);
  if (use == Transport::kNccl && !why_not.empty()) {
    return absl::FailedPreconditionError(absl::StrCat("--exchange nccl: ", why_not));
  }
  if (use == Transport::kAuto) {
    use = why_not.empty() ? Transport::kNccl : Transport::kMpi;
    note = absl::StrCat(", chosen by --exchange auto: ",
                        why_not.empty() ? "every rank computes on a GPU of its own" : why_not);
  }
  if (use == Transport::kMpi) {
    std::unique_ptr<DataPlane> plane = NewMpiDataPlane();
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
