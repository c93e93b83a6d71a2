#include "core/exchange/messenger.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "core/base/backoff.h"

namespace moe {

size_t ElementBytes(Element type) {
  switch (type) {
    case Element::kByte:
      return 1;
    case Element::kInt32:
    case Element::kFloat:
      return 4;
    case Element::kInt64:
      return 8;
  }
  return 1;
}

absl::Status WaitForTransfers(PendingTransfers* pending, const std::string& what,
                              const WaitLimits& limits) {
  using Clock = std::chrono::steady_clock;
  auto last_progress = Clock::now();
  Backoff backoff;
  while (!pending->done()) {
    absl::StatusOr<int> completed = pending->Poll();
    if (!completed.ok())
      return absl::InternalError(absl::StrCat(what, ": ", completed.status().message()));
    if (*completed > 0) {
      last_progress = Clock::now();
      backoff.Reset();
      continue;
    }
    if (pending->done()) break;
    if (limits.stop != nullptr && limits.stop->load()) {
      return absl::CancelledError(absl::StrCat(what, ": stopped by a signal"));
    }
    backoff.Pause();
    if (!backoff.TimeToCheck()) continue;
    if (limits.liveness != nullptr) {
      for (int peer : pending->PendingPeers()) {
        if (absl::Status alive = limits.liveness->CheckAlive(peer); !alive.ok()) {
          return absl::UnavailableError(absl::StrCat(what, ": ", alive.message()));
        }
      }
    }
    if (limits.timeout_seconds > 0 &&
        std::chrono::duration<double>(Clock::now() - last_progress).count() >
            limits.timeout_seconds) {
      const std::vector<int> peers = pending->PendingPeers();
      return absl::UnavailableError(absl::StrCat(what, ": rank ", peers.empty() ? -1 : peers[0],
                                                 " did not answer within ", limits.timeout_seconds,
                                                 " s (dead or hung?)"));
    }
  }
  return absl::OkStatus();
}

}  // namespace moe
