#include "core/data_plane.h"

#include <climits>
#include <cstring>

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
  class Detached final : public InFlight {
   public:
    Detached(std::vector<MPI_Request> requests, std::vector<int> peers, std::string oversized)
        : requests_(std::move(requests)), peers_(std::move(peers)), oversized_(std::move(oversized)) {}
    absl::Status Wait(double timeout_seconds, const std::string& what, const PeerLiveness* liveness) override {
      if (!oversized_.empty()) return absl::ResourceExhaustedError(absl::StrCat(what, ": ", oversized_));
      return WaitAll(&requests_, peers_, timeout_seconds, what, nullptr, liveness);
    }

   private:
    std::vector<MPI_Request> requests_;
    std::vector<int> peers_;
    std::string oversized_;
  };

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
  absl::Status Flush(double timeout_seconds, const std::string& what,
                     const PeerLiveness* liveness) override {
    return Detach()->Wait(timeout_seconds, what, liveness);
  }
  // Every transfer is posted when queued (non-blocking MPI), so a group is just its requests.
  std::unique_ptr<InFlight> Detach() override {
    auto group = std::make_unique<Detached>(std::move(requests_), std::move(peers_), std::move(oversized_));
    requests_.clear();  // moved-from: valid, and now certainly empty
    peers_.clear();
    oversized_.clear();
    return group;
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

}  // namespace

std::unique_ptr<DataPlane> NewMpiDataPlane() { return std::make_unique<MpiDataPlane>(); }

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
