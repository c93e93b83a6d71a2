// OpTimes: wall time spent per stage of the forward pass, for the benchmark's breakdown.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>

namespace moe {

enum class Op : int {
  kEmbed,
  kNorm,
  kQkv,
  kRope,
  kAttention,
  kOutProj,
  kRouter,
  kExchange,  // dispatch + experts + combine as the coordinator sees them
  kExperts,   // expert FFNs alone (measured where they run)
  kCombine,
  kLmHead,
  kCount
};

inline const char* OpName(Op op) {
  static const char* names[] = {"embed",  "rmsnorm",  "qkv_proj", "rope",    "attention", "o_proj",
                                "router", "exchange", "experts",  "combine", "lm_head"};
  return names[static_cast<int>(op)];
}

// Not thread-safe: one per engine, touched only by the thread that runs steps.
struct OpTimes {
  std::array<double, static_cast<int>(Op::kCount)> seconds{};
  void Reset() { seconds.fill(0); }
};

// Adds the scope's duration to times->seconds[op]; free when times is null.
class ScopedOpTimer {
 public:
  ScopedOpTimer(OpTimes* times, Op op) : times_(times), op_(op) {
    if (times_) start_ = std::chrono::steady_clock::now();
  }
  ~ScopedOpTimer() {
    if (times_) {
      times_->seconds[static_cast<int>(op_)] +=
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    }
  }
  ScopedOpTimer(const ScopedOpTimer&) = delete;
  ScopedOpTimer& operator=(const ScopedOpTimer&) = delete;

 private:
  OpTimes* times_;
  Op op_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace moe
