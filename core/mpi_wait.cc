#include "core/mpi_wait.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "core/backoff.h"

namespace moe {

absl::Status WaitAll(std::vector<MPI_Request>* requests, const std::vector<int>& peers,
                     double timeout_seconds, const std::string& what, const std::atomic<bool>* stop,
                     const PeerLiveness* liveness) {
  using Clock = std::chrono::steady_clock;
  const int n = static_cast<int>(requests->size());
  std::vector<int> done_idx(static_cast<size_t>(n));
  int remaining = 0;
  for (MPI_Request r : *requests) remaining += (r != MPI_REQUEST_NULL);
  auto last_progress = Clock::now();
  Backoff backoff;
  while (remaining > 0) {
    int n_done = 0;
    MPI_Testsome(n, requests->data(), &n_done, done_idx.data(), MPI_STATUSES_IGNORE);
    if (n_done == MPI_UNDEFINED) break;  // all null
    if (n_done > 0) {
      remaining -= n_done;
      last_progress = Clock::now();
      backoff.Reset();
      continue;
    }
    if (stop != nullptr && stop->load()) {
      return absl::CancelledError(absl::StrCat(what, ": stopped by a signal"));
    }
    backoff.Pause();
    if (liveness != nullptr && backoff.TimeToCheck()) {
      for (int i = 0; i < n; ++i) {
        if ((*requests)[i] == MPI_REQUEST_NULL) continue;
        if (absl::Status alive = liveness->CheckAlive(peers[i]); !alive.ok()) {
          return absl::UnavailableError(absl::StrCat(what, ": ", alive.message()));
        }
      }
    }
    if (timeout_seconds > 0 && backoff.TimeToCheck() &&
        std::chrono::duration<double>(Clock::now() - last_progress).count() > timeout_seconds) {
      for (int i = 0; i < n; ++i) {
        if ((*requests)[i] != MPI_REQUEST_NULL) {
          return absl::UnavailableError(absl::StrCat(what, ": rank ", peers[i],
                                                     " did not answer within ", timeout_seconds,
                                                     " s (dead or hung?)"));
        }
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace moe
