// Polling without spinning a core: a few busy polls, then sched_yield, then sleeps growing to
// 1 ms. Open MPI and NCCL would otherwise busy-poll, and with more ranks than cores (tests run 9
// ranks on 2) spinning ranks starve the ones doing work.
#pragma once

#include <sched.h>
#include <time.h>

#include <algorithm>
#include <cstdint>

namespace moe {

class Backoff {
 public:
  // After a poll that found work done: poll hard again.
  void Reset() { idle_ = 0; }
  // After a poll that found nothing.
  void Pause() {
    ++idle_;
    if (idle_ < 64) return;  // the answer is often microseconds away
    if (idle_ < 2048) {
      sched_yield();
      return;
    }
    const long ns = static_cast<long>(std::min<uint64_t>(1000000, 1000 * (idle_ - 2047)));
    const timespec ts{0, ns};
    nanosleep(&ts, nullptr);
  }
  // Every 64 pauses: when to look at the clock (reading it on every poll costs).
  bool TimeToCheck() const { return idle_ >= 64 && (idle_ & 63) == 0; }

 private:
  // 64 bits: a 32-bit count overflowed after about 25 idle days of 1 ms sleeps, then busy-polled.
  uint64_t idle_ = 0;
};

}  // namespace moe
