#include "core/exchange/data_plane.h"

#include <climits>

#include "absl/strings/str_cat.h"

namespace moe {
namespace {

constexpr int kRowsTag =
    120;  // one tag: order within a (peer, direction) is the messenger's to keep

class HostDataPlane final : public DataPlane {
 public:
  explicit HostDataPlane(Messenger* messenger) : messenger_(messenger) {}

  class Detached final : public InFlight {
   public:
    Detached(std::unique_ptr<Transfers> transfers, std::string oversized)
        : transfers_(std::move(transfers)), oversized_(std::move(oversized)) {}
    absl::Status Wait(double timeout_seconds, const std::string& what,
                      const PeerLiveness* liveness) override {
      if (!oversized_.empty())
        return absl::ResourceExhaustedError(absl::StrCat(what, ": ", oversized_));
      return transfers_->Wait(what, WaitLimits{timeout_seconds, nullptr, liveness});
    }

   private:
    std::unique_ptr<Transfers> transfers_;
    std::string oversized_;
  };

  std::string Describe() const override { return messenger_->Describe() + " (host memory)"; }
  bool Reads(const kernels::Backend& memory) const override { return memory.host_memory(); }
  bool device_memory() const override { return false; }

  void Send(const float* data, int64_t count, int peer) override {
    if (Fits(count)) messenger_->Send(data, count, Element::kFloat, peer, kRowsTag);
  }
  void Recv(float* data, int64_t count, int peer) override {
    if (Fits(count)) messenger_->Recv(data, count, Element::kFloat, peer, kRowsTag);
  }
  absl::Status Flush(double timeout_seconds, const std::string& what,
                     const PeerLiveness* liveness) override {
    return Detach()->Wait(timeout_seconds, what, liveness);
  }
  // Every transfer is posted when queued (non-blocking), so a group is just its transfers.
  std::unique_ptr<InFlight> Detach() override {
    auto group = std::make_unique<Detached>(messenger_->Take(), std::move(oversized_));
    oversized_.clear();
    return group;
  }

 private:
  // One MPI message holds at most INT_MAX elements. The exchange checks sizes before it posts
  // anything; this is the backstop.
  bool Fits(int64_t count) {
    if (count <= INT_MAX) return true;
    oversized_ = absl::StrCat("a transfer of ", count, " floats exceeds one message");
    return false;
  }
  Messenger* messenger_;
  std::string oversized_;
};

}  // namespace

std::unique_ptr<DataPlane> NewHostDataPlane(Messenger* messenger) {
  return std::make_unique<HostDataPlane>(messenger);
}

}  // namespace moe
