#include "core/mpi/mpi_wait.h"

namespace moe {
namespace {

class PendingRequests final : public PendingTransfers {
 public:
  PendingRequests(std::vector<MPI_Request>* requests, const std::vector<int>* peers)
      : requests_(requests), peers_(peers), done_idx_(requests->size()) {
    for (MPI_Request r : *requests_) remaining_ += (r != MPI_REQUEST_NULL);
  }
  absl::StatusOr<int> Poll() override {
    int n_done = 0;
    MPI_Testsome(static_cast<int>(requests_->size()), requests_->data(), &n_done, done_idx_.data(),
                 MPI_STATUSES_IGNORE);
    if (n_done == MPI_UNDEFINED) {  // all null
      remaining_ = 0;
      return 0;
    }
    remaining_ -= n_done;
    return n_done;
  }
  bool done() const override { return remaining_ <= 0; }
  std::vector<int> PendingPeers() const override {
    std::vector<int> pending;
    for (size_t i = 0; i < requests_->size(); ++i) {
      if ((*requests_)[i] != MPI_REQUEST_NULL) pending.push_back((*peers_)[i]);
    }
    return pending;
  }

 private:
  std::vector<MPI_Request>* requests_;
  const std::vector<int>* peers_;
  std::vector<int> done_idx_;
  int remaining_ = 0;
};

}  // namespace

absl::Status WaitAll(std::vector<MPI_Request>* requests, const std::vector<int>& peers,
                     double timeout_seconds, const std::string& what, const std::atomic<bool>* stop,
                     const PeerLiveness* liveness) {
  PendingRequests pending(requests, &peers);
  return WaitForTransfers(&pending, what, WaitLimits{timeout_seconds, stop, liveness});
}

void CancelPending(std::vector<MPI_Request>* requests) {
  for (MPI_Request& r : *requests) {
    if (r != MPI_REQUEST_NULL) {
      MPI_Cancel(&r);
      MPI_Request_free(&r);
    }
  }
}

}  // namespace moe
