// The CPU worker threads that every parallel kernel shares.
//
// One process-wide pool: kernels are called from one thread at a time (the engine's step loop), and a
// pool per call would pay thread start-up on every matmul. OpenBLAS is pinned to one thread per call
// so that its threads never compete with ours for the same cores.
#pragma once

#include <cstdint>
#include <functional>

namespace moe::kernels {

// Sets how many threads kernels use (the calling thread counts as one). n <= 0: one per core.
// REQUIRES: no kernel is running.
void SetCpuThreads(int n);
int CpuThreads();

// Runs fn(task) for task in [0, n_tasks) on the pool, the calling thread included, and returns when
// all are done. Tasks are handed out dynamically, so uneven tasks balance.
// REQUIRES: not called from inside fn (no nesting).
void ParallelFor(int64_t n_tasks, const std::function<void(int64_t task)>& fn);

}  // namespace moe::kernels
