#include "kernels/cpu/cpu_features.h"

#include "kernels/cpu/simd_kernels.h"
#include "kernels/cpu/thread_pool.h"

extern "C" char* openblas_get_corename(void);

namespace moe::kernels {

std::string DescribeCpuPaths() {
  return std::string("simd=") + simd::TargetName() + " openblas=" + openblas_get_corename() +
         " threads=" + std::to_string(CpuThreads());
}

}  // namespace moe::kernels
