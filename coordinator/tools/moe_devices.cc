// moe-devices: what this build and this machine offer: the CUDA backend, the NCCL data plane and
// the GPUs this process sees. --count prints only the number of GPUs (for scripts and tests).
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "core/cli/cli.h"
#include "core/mpi/data_plane_setup.h"
#include "kernels/backend.h"

ABSL_FLAG(bool, count, false, "print only the number of CUDA devices");

int main(int argc, char** argv) {
  using namespace moe;
  cli::Init(argc, argv, "moe-devices [--count]");
  std::string why;
  const std::vector<std::string> gpus = kernels::CudaDevices(&why);
  if (absl::GetFlag(FLAGS_count)) {
    std::printf("%zu\n", gpus.size());
    return 0;
  }
  std::printf("CUDA backend: %s\n", kernels::BuiltWithCuda() ? "built" : "not built");
  std::printf("NCCL data plane: %s\n",
              BuiltWithNccl() ? ("built, NCCL " + NcclVersion()).c_str() : "not built");
  std::printf("CUDA devices: %zu%s\n", gpus.size(), gpus.empty() ? (" (" + why + ")").c_str() : "");
  for (size_t d = 0; d < gpus.size(); ++d) std::printf("  cuda:%zu %s\n", d, gpus[d].c_str());
  return 0;
}
