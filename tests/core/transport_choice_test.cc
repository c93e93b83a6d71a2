#include "core/exchange/transport_choice.h"

#include <cstring>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace moe {
namespace {

RankDevice Gpu(const char* host, int device, const char* bus_id) {
  RankDevice r;
  r.cuda_device = device;
  r.has_nccl = 1;
  std::strncpy(r.host, host, sizeof(r.host) - 1);
  std::strncpy(r.gpu, bus_id, sizeof(r.gpu) - 1);
  return r;
}

TEST(TransportChoiceTest, AutoPicksNcclOnlyWhenEveryRankHasAGpuOfItsOwn) {
  // One node, three GPUs; a second node whose GPU has the same bus id (another machine).
  std::vector<RankDevice> ranks = {Gpu("a", 0, "0000:1B:00.0"), Gpu("a", 1, "0000:43:00.0"),
                                   Gpu("a", 2, "0000:52:00.0"), Gpu("b", 0, "0000:1B:00.0")};
  std::string note;
  EXPECT_EQ(*ChooseTransport(Transport::kAuto, ranks, &note), Transport::kNccl);
  EXPECT_EQ(note, ", chosen by --exchange auto: every rank computes on a GPU of its own");
  EXPECT_EQ(*ChooseTransport(Transport::kNccl, ranks), Transport::kNccl);
  EXPECT_EQ(*ChooseTransport(Transport::kMpi, ranks), Transport::kMpi);

  // Per-rank CUDA_VISIBLE_DEVICES: both call their GPU 0, but they are different GPUs.
  std::vector<RankDevice> masked = {Gpu("a", 0, "0000:1B:00.0"), Gpu("a", 0, "0000:43:00.0")};
  EXPECT_EQ(*ChooseTransport(Transport::kAuto, masked), Transport::kNccl);
}

TEST(TransportChoiceTest, SharedGpuCpuRankOrNoNcclFallsBackOrFails) {
  // Two ranks on one physical GPU, numbered differently by their masks.
  std::vector<RankDevice> shared = {Gpu("a", 0, "0000:1B:00.0"), Gpu("a", 1, "0000:43:00.0"),
                                    Gpu("a", 3, "0000:1B:00.0")};
  std::string note;
  EXPECT_EQ(*ChooseTransport(Transport::kAuto, shared, &note), Transport::kMpi);
  EXPECT_EQ(note, ", chosen by --exchange auto: ranks 0 and 2 share GPU 0 (0000:1B:00.0) on host a; "
                  "NCCL needs one GPU per rank");
  absl::StatusOr<Transport> insisted = ChooseTransport(Transport::kNccl, shared);
  ASSERT_FALSE(insisted.ok());
  EXPECT_EQ(insisted.status().message(),
            "--exchange nccl: ranks 0 and 2 share GPU 0 (0000:1B:00.0) on host a; NCCL needs one GPU per rank");

  std::vector<RankDevice> cpu = {Gpu("a", 0, "0000:1B:00.0"), RankDevice{}};
  cpu[1].has_nccl = 1;
  EXPECT_EQ(*ChooseTransport(Transport::kAuto, cpu), Transport::kMpi);
  EXPECT_EQ(WhyNotNccl(cpu), "rank 1 does not compute on a GPU (--device cuda on every rank)");

  std::vector<RankDevice> no_nccl = {Gpu("a", 0, "0000:1B:00.0"), Gpu("a", 1, "0000:43:00.0")};
  no_nccl[1].has_nccl = 0;
  EXPECT_EQ(WhyNotNccl(no_nccl), "rank 1 was built without NCCL");
  EXPECT_FALSE(ChooseTransport(Transport::kNccl, no_nccl).ok());
  // A build without CUDA has neither: the GPU is the reason given.
  std::vector<RankDevice> no_cuda(2);
  EXPECT_EQ(WhyNotNccl(no_cuda), "rank 0 does not compute on a GPU (--device cuda on every rank)");
}

TEST(TransportChoiceTest, ParsesTheFlagAndDescribesACpuRank) {
  EXPECT_EQ(*ParseTransport("auto"), Transport::kAuto);
  EXPECT_EQ(*ParseTransport("MPI"), Transport::kMpi);
  EXPECT_EQ(*ParseTransport("nccl"), Transport::kNccl);
  EXPECT_EQ(ParseTransport("gloo").status().message(), "--exchange must be auto, mpi or nccl, got 'gloo'");
  const std::unique_ptr<kernels::Backend> cpu_backend = kernels::NewCpuBackend();
  const RankDevice cpu = DescribeRank(cpu_backend.get(), /*has_nccl=*/true);
  EXPECT_EQ(cpu.cuda_device, -1);
  EXPECT_EQ(cpu.gpu[0], '\0');
  EXPECT_NE(cpu.host[0], '\0');
  EXPECT_EQ(DescribeRank(nullptr, false).cuda_device, -1);
}

}  // namespace
}  // namespace moe
