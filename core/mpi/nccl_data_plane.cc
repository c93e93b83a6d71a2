#include "core/mpi/nccl_data_plane.h"

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <algorithm>
#include <chrono>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/base/backoff.h"
#include "core/base/status_macros.h"
#include "kernels/cuda/cuda_check.h"

namespace moe {
namespace {

using Clock = std::chrono::steady_clock;

absl::Status NcclError(ncclResult_t r, const char* what, ncclComm_t comm, const char* file,
                       int line) {
  std::string why = ncclGetErrorString(r);
  if (comm != nullptr) {
    const char* last = ncclGetLastError(comm);
    if (last != nullptr && last[0] != '\0') absl::StrAppend(&why, ": ", last);
  }
  return kernels::cuda::CudaCallError(what, why, file, line);
}

// ncclInProgress is not a failure on a non-blocking communicator: the caller polls it out.
#define MOE_NCCL_STATUS(expr, comm)                                              \
  [&]() -> absl::Status {                                                        \
    const ncclResult_t moe_nccl_result_ = (expr);                                \
    if (moe_nccl_result_ == ncclSuccess || moe_nccl_result_ == ncclInProgress) { \
      return absl::OkStatus();                                                   \
    }                                                                            \
    return NcclError(moe_nccl_result_, #expr, (comm), __FILE__, __LINE__);       \
  }()

class NcclDataPlane final : public DataPlane {
 public:
  NcclDataPlane(kernels::Backend* backend, int rank)
      : backend_(backend), rank_(rank), device_(backend->cuda_device()) {}

  ~NcclDataPlane() override {
    // Errors here have nowhere to go: the process is leaving.
    if (cudaSetDevice(device_) != cudaSuccess) return;
    if (comm_ != nullptr) {
      // Finalize flushes what is in flight (nothing, after a successful Flush); a failure or a
      // timeout in it aborts the communicator instead (Break).
      if (MOE_NCCL_STATUS(ncclCommFinalize(comm_), comm_).ok()) {
        WaitForComm(Clock::now() + std::chrono::seconds(10), "ncclCommFinalize").IgnoreError();
      } else {
        Break(absl::OkStatus()).IgnoreError();
      }
      if (comm_ != nullptr) ncclCommDestroy(comm_);
    }
    if (done_ != nullptr) cudaEventDestroy(done_);
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }

  absl::Status Init(const ncclUniqueId& id, int n_ranks, double timeout_seconds) {
    MOE_CUDA_RETURN_IF_ERROR(cudaSetDevice(device_));
    MOE_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    MOE_CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(&done_, cudaEventDisableTiming));
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    const absl::Status started =
        MOE_NCCL_STATUS(ncclCommInitRankConfig(&comm_, n_ranks, id, rank_, &config), nullptr);
    if (!started.ok()) return Break(started);
    return WaitForComm(Deadline(timeout_seconds), "ncclCommInitRankConfig");
  }

  std::string Describe() const override {
    return absl::StrCat("NCCL ", NcclVersionString(), " (", backend_->Describe(), ")");
  }
  bool Reads(const kernels::Backend& memory) const override { return &memory == backend_; }
  bool device_memory() const override { return true; }
  void Send(const float* data, int64_t count, int peer) override {
    queued_.push_back({true, const_cast<float*>(data), count, peer});
  }
  void Recv(float* data, int64_t count, int peer) override {
    queued_.push_back({false, data, count, peer});
  }

  absl::Status Flush(double timeout_seconds, const std::string& what,
                     const PeerLiveness* liveness) override {
    std::vector<Transfer> transfers;
    transfers.swap(queued_);
    if (broken_) {
      return absl::FailedPreconditionError(
          absl::StrCat(what, ": the NCCL communicator was aborted after an earlier failure"));
    }
    if (transfers.empty()) return absl::OkStatus();
    MOE_CUDA_RETURN_IF_ERROR(cudaSetDevice(device_));
    const Clock::time_point deadline = Deadline(timeout_seconds);
    // One group: NCCL runs every transfer of it concurrently, so the order in which peers are
    // listed cannot deadlock.
    absl::Status posted = MOE_NCCL_STATUS(ncclGroupStart(), comm_);
    for (const Transfer& t : transfers) {
      if (!posted.ok()) break;
      posted = t.send ? MOE_NCCL_STATUS(ncclSend(t.data, static_cast<size_t>(t.count), ncclFloat,
                                                 t.peer, comm_, stream_),
                                        comm_)
                      : MOE_NCCL_STATUS(ncclRecv(t.data, static_cast<size_t>(t.count), ncclFloat,
                                                 t.peer, comm_, stream_),
                                        comm_);
    }
    const absl::Status ended = MOE_NCCL_STATUS(ncclGroupEnd(), comm_);
    if (!posted.ok()) return Break(posted);
    if (!ended.ok()) return Break(ended);
    // Non-blocking: the group may still be being enqueued (connections are set up lazily, on the
    // first transfer between two ranks).
    MOE_RETURN_IF_ERROR(WaitForComm(deadline, what, &transfers, timeout_seconds));
    MOE_CUDA_RETURN_IF_ERROR(cudaEventRecord(done_, stream_));
    Backoff backoff;
    for (;;) {
      const cudaError_t e = cudaEventQuery(done_);
      if (e == cudaSuccess) return absl::OkStatus();
      if (e != cudaErrorNotReady) return Break(MOE_CUDA_STATUS(e));
      backoff.Pause();
      if (!backoff.TimeToCheck()) continue;
      ncclResult_t async = ncclSuccess;
      ncclCommGetAsyncError(comm_, &async);
      if (async != ncclSuccess && async != ncclInProgress) {
        return Break(NcclError(async, "NCCL transfer", comm_, __FILE__, __LINE__));
      }
      if (Clock::now() > deadline) return Break(Timeout(what, timeout_seconds, transfers));
      if (liveness != nullptr) {
        for (const Transfer& t : transfers) {
          if (absl::Status alive = liveness->CheckAlive(t.peer); !alive.ok()) {
            return Break(absl::UnavailableError(absl::StrCat(what, ": ", alive.message())));
          }
        }
      }
    }
  }

 private:
  struct Transfer {
    bool send;
    float* data;
    int64_t count;
    int peer;
  };

  static Clock::time_point Deadline(double seconds) {
    return Clock::now() +
           std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  }

  // Polls a non-blocking communicator until its last call has finished. For a group of transfers,
  // a deadline passed is blamed on their peers (seconds: the timeout, for the message).
  absl::Status WaitForComm(Clock::time_point deadline, const std::string& what,
                           const std::vector<Transfer>* transfers = nullptr, double seconds = 0) {
    Backoff backoff;
    for (;;) {
      ncclResult_t state = ncclInProgress;
      const ncclResult_t r = ncclCommGetAsyncError(comm_, &state);
      if (r != ncclSuccess)
        return Break(NcclError(r, "ncclCommGetAsyncError", comm_, __FILE__, __LINE__));
      if (state == ncclSuccess) return absl::OkStatus();
      if (state != ncclInProgress)
        return Break(NcclError(state, what.c_str(), comm_, __FILE__, __LINE__));
      backoff.Pause();
      if (backoff.TimeToCheck() && Clock::now() > deadline) {
        return Break(transfers != nullptr ? Timeout(what, seconds, *transfers)
                                          : absl::UnavailableError(absl::StrCat(
                                                what,
                                                ": NCCL did not finish in time (a rank dead, "
                                                "hung or unreachable?)")));
      }
    }
  }

  absl::Status Timeout(const std::string& what, double seconds,
                       const std::vector<Transfer>& transfers) {
    std::vector<int> peers;
    for (const Transfer& t : transfers) peers.push_back(t.peer);
    std::sort(peers.begin(), peers.end());
    peers.erase(std::unique(peers.begin(), peers.end()), peers.end());
    return absl::UnavailableError(
        absl::StrCat(what, ": NCCL transfers with rank(s) ", absl::StrJoin(peers, ", "),
                     " did not finish within ", seconds, " s (dead or hung?)"));
  }

  // After a failure the communicator's state is unknown: abort it (which also stops transfers
  // still spinning on the GPU) and refuse every later call.
  absl::Status Break(absl::Status status) {
    if (comm_ != nullptr) ncclCommAbort(comm_);  // frees the communicator
    comm_ = nullptr;
    broken_ = true;
    return status;
  }

  kernels::Backend* backend_;
  const int rank_;
  const int device_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  cudaEvent_t done_ = nullptr;
  bool broken_ = false;
  std::vector<Transfer> queued_;
};

}  // namespace

std::string NcclVersionString() {
  int v = 0;
  if (ncclGetVersion(&v) != ncclSuccess) return "unknown";
  // NCCL >= 2.9 encodes major * 10000 + minor * 100 + patch.
  return absl::StrCat(v / 10000, ".", (v / 100) % 100, ".", v % 100);
}

absl::StatusOr<std::unique_ptr<DataPlane>> NewNcclDataPlane(kernels::Backend* backend,
                                                            MPI_Comm comm, double timeout_seconds) {
  int rank = 0, n_ranks = 0;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &n_ranks);
  // Rank 0's id, or the news that it has none: every rank takes part in the broadcast either way.
  struct {
    int32_t ok;
    ncclUniqueId id;
  } root{};
  absl::Status id_status;
  if (rank == 0) {
    id_status = MOE_NCCL_STATUS(ncclGetUniqueId(&root.id), nullptr);
    root.ok = id_status.ok() ? 1 : 0;
  }
  MPI_Bcast(&root, sizeof(root), MPI_BYTE, 0, comm);
  if (!root.ok) {
    return rank == 0 ? id_status : absl::UnavailableError("rank 0 could not make NCCL's unique id");
  }
  if (backend == nullptr || backend->cuda_device() < 0) {
    return absl::FailedPreconditionError("the NCCL exchange needs this rank on a CUDA device");
  }
  auto plane = std::make_unique<NcclDataPlane>(backend, rank);
  MOE_RETURN_IF_ERROR(plane->Init(root.id, n_ranks, timeout_seconds));
  return plane;
}

}  // namespace moe
