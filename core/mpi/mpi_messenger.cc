#include "core/mpi/mpi_messenger.h"

#include <mpi.h>

#include "core/mpi/mpi_wait.h"

namespace moe {
namespace {

MPI_Datatype ToMpi(Element type) {
  switch (type) {
    case Element::kByte:
      return MPI_BYTE;
    case Element::kInt32:
      return MPI_INT32_T;
    case Element::kInt64:
      return MPI_INT64_T;
    case Element::kFloat:
      return MPI_FLOAT;
  }
  return MPI_BYTE;
}

class MpiTransfers final : public Transfers {
 public:
  MpiTransfers(std::vector<MPI_Request> requests, std::vector<int> peers)
      : requests_(std::move(requests)), peers_(std::move(peers)) {}
  ~MpiTransfers() override { CancelPending(&requests_); }
  absl::Status Wait(const std::string& what, const WaitLimits& limits) override {
    return WaitAll(&requests_, peers_, limits.timeout_seconds, what, limits.stop, limits.liveness);
  }

 private:
  std::vector<MPI_Request> requests_;
  std::vector<int> peers_;
};

class MpiMessenger final : public Messenger {
 public:
  MpiMessenger() {
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
  }
  std::string Describe() const override { return "MPI"; }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  // Counts fit an int: the exchange checks every message's size before it posts anything.
  void Send(const void* data, int64_t count, Element type, int peer, int tag) override {
    MPI_Request req;
    MPI_Isend(data, static_cast<int>(count), ToMpi(type), peer, tag, MPI_COMM_WORLD, &req);
    requests_.push_back(req);
    peers_.push_back(peer);
  }
  void Recv(void* data, int64_t count, Element type, int peer, int tag) override {
    MPI_Request req;
    MPI_Irecv(data, static_cast<int>(count), ToMpi(type), peer, tag, MPI_COMM_WORLD, &req);
    requests_.push_back(req);
    peers_.push_back(peer);
  }
  std::unique_ptr<Transfers> Take() override {
    auto group = std::make_unique<MpiTransfers>(std::move(requests_), std::move(peers_));
    requests_.clear();  // moved-from: valid, and now certainly empty
    peers_.clear();
    return group;
  }

 private:
  int rank_ = 0;
  int size_ = 0;
  std::vector<MPI_Request> requests_;
  std::vector<int> peers_;
};

}  // namespace

std::unique_ptr<Messenger> NewMpiMessenger() { return std::make_unique<MpiMessenger>(); }

}  // namespace moe
