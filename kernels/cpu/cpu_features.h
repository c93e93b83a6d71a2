// What the CPU offers and which code paths the kernels picked for it, for start-up logs and benches.
#pragma once

#include <string>

namespace moe::kernels {

// OpenBLAS 0.3.21 does not know recent AVX-512 CPUs (AMD Zen 4/5, new Xeons): it falls back to
// Haswell or Prescott kernels that run sgemm 2-5x slower. The core type can only be chosen through
// the environment before the library initialises, so this sets OPENBLAS_CORETYPE=SkylakeX and
// re-executes the program once when the CPU has AVX-512 and the user did not choose. Call first
// thing in main(); returns only if no re-exec happened.
void MaybeReexecWithOpenBlasCoreType(char** argv);

// One line: Highway target, OpenBLAS core, threads. E.g. "simd=AVX3_ZEN4 openblas=SkylakeX threads=2".
std::string DescribeCpuPaths();

}  // namespace moe::kernels
