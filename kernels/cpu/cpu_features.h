// What the CPU offers and which code paths the kernels picked for it, for start-up logs and benches.
#pragma once

#include <string>

namespace moe::kernels {

// One line: Highway target, OpenBLAS core, threads. E.g. "simd=AVX3_ZEN4 openblas=SkylakeX threads=2".
std::string DescribeCpuPaths();

}  // namespace moe::kernels
