// In-process ranks on threads: a Messenger per rank over shared memory, with MPI's matching rules
// (core/exchange/messenger.h), so that the cluster's protocol (the coordinator's ClusterExchange
// and the workers' serving loops) runs in one test process. A rank can be marked dead, as a
// worker whose host died: its peers' waits on it then fail at once through liveness().
#pragma once

#include <deque>
#include <memory>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "core/exchange/messenger.h"

namespace moe {

class InProcessNetwork {
 public:
  explicit InProcessNetwork(int n_ranks);
  ~InProcessNetwork();
  InProcessNetwork(const InProcessNetwork&) = delete;
  InProcessNetwork& operator=(const InProcessNetwork&) = delete;

  int size() const { return static_cast<int>(endpoints_.size()); }
  // Rank r's end, owned by the network; each used by one thread at a time.
  Messenger* rank(int r) { return endpoints_[static_cast<size_t>(r)].get(); }
  // What the ranks know of each other: Unavailable for a rank marked dead. Thread-safe.
  const PeerLiveness* liveness() const { return &liveness_; }
  void MarkDead(int r);

  // A receive posted and not yet matched, or a message sent and not yet received. Internal.
  struct PostedReceive;
  struct Message {
    int from = 0;
    int tag = 0;
    std::vector<unsigned char> bytes;
  };
  // Delivers a message to rank `to`: into the first matching receive posted, or queued until one
  // is. Sends never block (MPI's eager sends of small messages; enough for the protocol).
  void Deliver(int to, Message message);
  // Matches a receive against what rank `to` has queued, or leaves it posted.
  void Post(int to, const std::shared_ptr<PostedReceive>& receive);
  // Withdraws a receive that never completed.
  void Withdraw(int to, const std::shared_ptr<PostedReceive>& receive);

 private:
  class Liveness : public PeerLiveness {
   public:
    explicit Liveness(int n) : dead_(static_cast<size_t>(n), false) {}
    absl::Status CheckAlive(int rank) const override;
    void MarkDead(int r);

   private:
    mutable absl::Mutex mu_;
    std::vector<bool> dead_ ABSL_GUARDED_BY(mu_);
  };
  struct Mailbox {
    std::deque<Message> unmatched;
    std::deque<std::shared_ptr<PostedReceive>> posted;
  };
  absl::Mutex mu_;
  std::vector<Mailbox> mailboxes_ ABSL_GUARDED_BY(mu_);  // [ranks]
  Liveness liveness_;
  std::vector<std::unique_ptr<Messenger>> endpoints_;  // [ranks]
};

}  // namespace moe
