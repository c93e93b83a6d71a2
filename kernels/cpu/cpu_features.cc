#include "kernels/cpu/cpu_features.h"

#include <unistd.h>

#include <cstdlib>

#include "kernels/cpu/simd_kernels.h"
#include "kernels/cpu/thread_pool.h"

extern "C" char* openblas_get_corename(void);

namespace moe::kernels {

void MaybeReexecWithOpenBlasCoreType(char** argv) {
#if defined(__x86_64__)
  if (std::getenv("OPENBLAS_CORETYPE") != nullptr) return;
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512bw") ||
      !__builtin_cpu_supports("avx512vl") || !__builtin_cpu_supports("avx512dq")) {
    return;
  }
  setenv("OPENBLAS_CORETYPE", "SkylakeX", 1);
  execv("/proc/self/exe", argv);
  // execv failed (no /proc?): carry on with the slower kernels rather than not run at all.
#else
  (void)argv;
#endif
}

std::string DescribeCpuPaths() {
  return std::string("simd=") + simd::TargetName() + " openblas=" + openblas_get_corename() +
         " threads=" + std::to_string(CpuThreads());
}

}  // namespace moe::kernels
