#include "kernels/cpu/thread_pool.h"

#include <cblas.h>

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace moe::kernels {
namespace {

class ThreadPool {
 public:
  explicit ThreadPool(int n_threads) {
    for (int i = 1; i < n_threads; ++i) threads_.emplace_back([this] { WorkerLoop(); });
  }
  ~ThreadPool() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
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
    {
      std::lock_guard<std::mutex> lock(mu_);
      fn_ = &fn;
      n_tasks_ = n_tasks;
      next_.store(0);
      active_ = static_cast<int>(threads_.size());
      ++generation_;
    }
    wake_.notify_all();
    Drain(fn, n_tasks);
    std::unique_lock<std::mutex> lock(mu_);
    done_.wait(lock, [this] { return active_ == 0; });
    fn_ = nullptr;
  }

 private:
  void Drain(const std::function<void(int64_t)>& fn, int64_t n_tasks) {
    for (int64_t i = next_.fetch_add(1); i < n_tasks; i = next_.fetch_add(1)) fn(i);
  }

  void WorkerLoop() {
    uint64_t seen = 0;
    for (;;) {
      const std::function<void(int64_t)>* fn;
      int64_t n_tasks;
      {
        std::unique_lock<std::mutex> lock(mu_);
        wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
        if (stop_) return;
        seen = generation_;
        fn = fn_;
        n_tasks = n_tasks_;
      }
      Drain(*fn, n_tasks);
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (--active_ == 0) done_.notify_one();
      }
    }
  }

  std::vector<std::thread> threads_;
  std::mutex mu_;
  std::condition_variable wake_;
  std::condition_variable done_;
  bool stop_ = false;                                      // guarded by mu_
  uint64_t generation_ = 0;                                // guarded by mu_
  int active_ = 0;                                         // guarded by mu_
  const std::function<void(int64_t)>* fn_ = nullptr;       // guarded by mu_
  int64_t n_tasks_ = 0;                                    // guarded by mu_
  std::atomic<int64_t> next_{0};
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

void ParallelFor(int64_t n_tasks, const std::function<void(int64_t)>& fn) {
  if (!Pool()) SetCpuThreads(0);
  Pool()->Run(n_tasks, fn);
}

}  // namespace moe::kernels
