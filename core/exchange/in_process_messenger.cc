#include "core/exchange/in_process_messenger.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace moe {

struct InProcessNetwork::PostedReceive {
  int from = 0;
  int tag = 0;
  void* data = nullptr;
  size_t capacity = 0;  // bytes
  // Written under the network's lock by whoever matches it; read by the waiting rank.
  std::atomic<bool> done{false};
  absl::Status error;  // set before done
};

namespace {

// One rank's posted transfers: sends are delivered when posted, so only receives are pending.
class InProcessTransfers final : public Transfers, public PendingTransfers {
 public:
  InProcessTransfers(InProcessNetwork* network, int rank,
                     std::vector<std::shared_ptr<InProcessNetwork::PostedReceive>> receives)
      : network_(network),
        rank_(rank),
        receives_(std::move(receives)),
        counted_(receives_.size(), false),
        remaining_(static_cast<int>(receives_.size())) {}
  ~InProcessTransfers() override {
    for (const auto& r : receives_) {
      if (!r->done.load()) network_->Withdraw(rank_, r);
    }
  }
  absl::Status Wait(const std::string& what, const WaitLimits& limits) override {
    return WaitForTransfers(this, what, limits);
  }
  absl::StatusOr<int> Poll() override {
    int completed = 0;
    for (size_t i = 0; i < receives_.size(); ++i) {
      if (counted_[i] || !receives_[i]->done.load()) continue;
      if (!receives_[i]->error.ok()) return receives_[i]->error;
      counted_[i] = true;
      ++completed;
    }
    remaining_ -= completed;
    return completed;
  }
  bool done() const override { return remaining_ == 0; }
  std::vector<int> PendingPeers() const override {
    std::vector<int> peers;
    for (size_t i = 0; i < receives_.size(); ++i) {
      if (!counted_[i]) peers.push_back(receives_[i]->from);
    }
    return peers;
  }

 private:
  InProcessNetwork* network_;
  int rank_;
  std::vector<std::shared_ptr<InProcessNetwork::PostedReceive>> receives_;
  std::vector<bool> counted_;  // [receives] completed and seen by Poll
  int remaining_;
};

class InProcessMessenger final : public Messenger {
 public:
  InProcessMessenger(InProcessNetwork* network, int rank) : network_(network), rank_(rank) {}
  std::string Describe() const override { return "in-process"; }
  int rank() const override { return rank_; }
  int size() const override { return network_->size(); }
  void Send(const void* data, int64_t count, Element type, int peer, int tag) override {
    InProcessNetwork::Message m;
    m.from = rank_;
    m.tag = tag;
    const auto* bytes = static_cast<const unsigned char*>(data);
    m.bytes.assign(bytes, bytes + static_cast<size_t>(count) * ElementBytes(type));
    network_->Deliver(peer, std::move(m));
  }
  void Recv(void* data, int64_t count, Element type, int peer, int tag) override {
    auto r = std::make_shared<InProcessNetwork::PostedReceive>();
    r->from = peer;
    r->tag = tag;
    r->data = data;
    r->capacity = static_cast<size_t>(count) * ElementBytes(type);
    network_->Post(rank_, r);
    receives_.push_back(std::move(r));
  }
  std::unique_ptr<Transfers> Take() override {
    auto group = std::make_unique<InProcessTransfers>(network_, rank_, std::move(receives_));
    receives_.clear();
    return group;
  }

 private:
  InProcessNetwork* network_;
  int rank_;
  std::vector<std::shared_ptr<InProcessNetwork::PostedReceive>> receives_;
};

// Copies a message into a receive and completes it.
void Complete(InProcessNetwork::PostedReceive* r, const InProcessNetwork::Message& m) {
  if (m.bytes.size() > r->capacity) {
    r->error = absl::InternalError(
        absl::StrCat("a message of ", m.bytes.size(), " bytes from rank ", m.from, " (tag ", m.tag,
                     ") overflows a receive of ", r->capacity, " bytes"));
  } else if (!m.bytes.empty()) {
    std::memcpy(r->data, m.bytes.data(), m.bytes.size());
  }
  r->done.store(true);
}

}  // namespace

InProcessNetwork::InProcessNetwork(int n_ranks)
    : mailboxes_(static_cast<size_t>(n_ranks)), liveness_(n_ranks) {
  for (int r = 0; r < n_ranks; ++r)
    endpoints_.push_back(std::make_unique<InProcessMessenger>(this, r));
}

InProcessNetwork::~InProcessNetwork() = default;

void InProcessNetwork::MarkDead(int r) { liveness_.MarkDead(r); }

void InProcessNetwork::Deliver(int to, Message message) {
  absl::MutexLock lock(&mu_);
  Mailbox& box = mailboxes_[static_cast<size_t>(to)];
  for (auto it = box.posted.begin(); it != box.posted.end(); ++it) {
    if ((*it)->from == message.from && (*it)->tag == message.tag) {
      Complete(it->get(), message);
      box.posted.erase(it);
      return;
    }
  }
  box.unmatched.push_back(std::move(message));
}

void InProcessNetwork::Post(int to, const std::shared_ptr<PostedReceive>& receive) {
  absl::MutexLock lock(&mu_);
  Mailbox& box = mailboxes_[static_cast<size_t>(to)];
  for (auto it = box.unmatched.begin(); it != box.unmatched.end(); ++it) {
    if (it->from == receive->from && it->tag == receive->tag) {
      Complete(receive.get(), *it);
      box.unmatched.erase(it);
      return;
    }
  }
  box.posted.push_back(receive);
}

void InProcessNetwork::Withdraw(int to, const std::shared_ptr<PostedReceive>& receive) {
  absl::MutexLock lock(&mu_);
  auto& posted = mailboxes_[static_cast<size_t>(to)].posted;
  posted.erase(std::remove(posted.begin(), posted.end(), receive), posted.end());
}

absl::Status InProcessNetwork::Liveness::CheckAlive(int rank) const {
  absl::MutexLock lock(&mu_);
  if (rank >= 0 && rank < static_cast<int>(dead_.size()) && dead_[static_cast<size_t>(rank)]) {
    return absl::UnavailableError(absl::StrCat("rank ", rank, " is gone (marked dead)"));
  }
  return absl::OkStatus();
}

void InProcessNetwork::Liveness::MarkDead(int r) {
  absl::MutexLock lock(&mu_);
  dead_[static_cast<size_t>(r)] = true;
}

}  // namespace moe
