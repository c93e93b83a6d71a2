#include "kernels/cpu/thread_pool.h"

#include "kernels/backend.h"

#include <cblas.h>
#include <sched.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace moe::kernels {
namespace {

// How long an idle thread keeps polling for the next parallel loop before it sleeps. A decode
// step runs dozens of loops a few microseconds apart: waking a sleeping thread costs more than
// that, so threads poll for a moment (measured: 6% faster decoding at batch 1). Long enough to
// bridge the gaps inside one step, short enough that a process waiting for another (the
// cluster's coordinator while its workers run the experts) soon sleeps.
constexpr auto kSpin = std::chrono::microseconds(100);

inline void CpuRelax() {
#if defined(__x86_64__)
  _mm_pause();
#else
  std::this_thread::yield();
#endif
}

// Polls done() for up to kSpin; true when it became true. After the first few polls each one
// yields the core: where other threads want it (several ranks on one host), they get it.
template <typename Done>
bool SpinUntil(Done done) {
  const auto deadline = std::chrono::steady_clock::now() + kSpin;
  for (int i = 1;; ++i) {
    if (done()) return true;
    if (i < 64) {
      CpuRelax();
      continue;
    }
    sched_yield();
    if (std::chrono::steady_clock::now() > deadline) return done();
  }
}

class ThreadPool {
 public:
  explicit ThreadPool(int n_threads) {
    for (int i = 1; i < n_threads; ++i) threads_.emplace_back([this] { WorkerLoop(); });
  }
  ~ThreadPool() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_.store(true);
      generation_.fetch_add(1);
    }
    wake_.notify_all();
    for (auto& t : threads_) t.join();
  }
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return static_cast<int>(threads_.size()) + 1; }

  void Run(int64_t n_tasks, const std::function<void(int64_t)>& fn) {
    if (threads_.empty() || n_tasks <= 1) {
      for (int64_t i = 0; i < n_tasks; ++i) fn(i);
      return;
    }
    // Published before the generation changes; workers read them after they see it change.
    fn_ = &fn;
    n_tasks_ = n_tasks;
    next_.store(0, std::memory_order_relaxed);
    active_.store(static_cast<int>(threads_.size()), std::memory_order_relaxed);
    bool sleepers;
    {
      // Under the lock: a worker going to sleep either sees the new generation or is woken.
      std::lock_guard<std::mutex> lock(mu_);
      generation_.fetch_add(1, std::memory_order_release);
      sleepers = sleepers_ > 0;
    }
    if (sleepers) wake_.notify_all();
    Drain(fn, n_tasks);
    auto all_done = [this] { return active_.load(std::memory_order_acquire) == 0; };
    if (!SpinUntil(all_done)) {
      std::unique_lock<std::mutex> lock(mu_);
      done_.wait(lock, all_done);
    }
  }

 private:
  void Drain(const std::function<void(int64_t)>& fn, int64_t n_tasks) {
    for (int64_t i = next_.fetch_add(1); i < n_tasks; i = next_.fetch_add(1)) fn(i);
  }

  void WorkerLoop() {
    uint64_t seen = 0;
    for (;;) {
      auto changed = [&] { return generation_.load(std::memory_order_acquire) != seen; };
      if (!SpinUntil(changed)) {
        std::unique_lock<std::mutex> lock(mu_);
        ++sleepers_;
        wake_.wait(lock, changed);
        --sleepers_;
      }
      if (stop_.load()) return;
      seen = generation_.load(std::memory_order_acquire);
      Drain(*fn_, n_tasks_);
      if (active_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        std::lock_guard<std::mutex> lock(mu_);  // the waiter checks under the lock
        done_.notify_one();
      }
    }
  }

  std::vector<std::thread> threads_;
  std::mutex mu_;
  std::condition_variable wake_;
  std::condition_variable done_;
  int sleepers_ = 0;  // guarded by mu_
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> generation_{0};  // changes once per parallel loop
  std::atomic<int> active_{0};           // workers still in the current loop
  std::atomic<int64_t> next_{0};         // the next task to hand out
  const std::function<void(int64_t)>* fn_ = nullptr;  // written by Run before generation_ changes
  int64_t n_tasks_ = 0;                                // likewise
};

std::unique_ptr<ThreadPool>& Pool() {
  static std::unique_ptr<ThreadPool> pool;
  return pool;
}

}  // namespace

void SetCpuThreads(int n) {
  if (n <= 0) n = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  openblas_set_num_threads(1);
  if (Pool() && Pool()->size() == n) return;
  Pool() = std::make_unique<ThreadPool>(n);
}

int CpuThreads() {
  if (!Pool()) SetCpuThreads(0);
  return Pool()->size();
}

namespace {

// Set on a background loader's thread (UseCallingThreadOnly): the pool serves one caller at a
// time, and that caller is the thread running the ops.
thread_local bool t_calling_thread_only = false;

}  // namespace

void UseCallingThreadOnly() { t_calling_thread_only = true; }

void ParallelFor(int64_t n_tasks, const std::function<void(int64_t)>& fn) {
  if (t_calling_thread_only) {
    for (int64_t i = 0; i < n_tasks; ++i) fn(i);
    return;
  }
  if (!Pool()) SetCpuThreads(0);
  Pool()->Run(n_tasks, fn);
}

}  // namespace moe::kernels
