// When a step runs as two micro-batches in ping-pong (ModelRunner): one micro-batch's experts and
// exchange run on the workers while the other's attention runs on the coordinator.
//
// Whether that pays depends on the hardware, not only on the batch: overlap hides at most the
// shorter of the two sides, and it costs a second exchange per layer and, where the experts are
// memory-bound, a second read of every active expert's weights. On a Mixtral slice whose experts
// take 88% of a decode step it loses 46% at 64 sequences; on the demo model it gains 25%. So
// --overlap auto measures: for each kind of step (decode or prefill, and the power of two of its
// token count) it times steps both ways, then runs the faster way, trying the other again now and
// then (less and less often while the choice stands) so that a change of load or machine is
// noticed.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <string>

namespace moe {

struct OverlapPolicy {
  enum class Mode { kOff, kOn, kAuto };
  Mode mode = Mode::kAuto;
  // kAuto never splits a step of fewer tokens: small decode batches lose more to the extra
  // exchange than they can gain (demo model, 2 disjoint cores: 0.87-1.01x at 16-32 sequences).
  int64_t min_tokens = 64;
  // kAuto: steps timed each way before choosing (2 where the ways differ by more than 25%), and
  // when the way not chosen is tried again: probe_every steps of its kind after the choice, then
  // at doubling intervals while the choice stands (at most 8 x probe_every apart).
  int trials = 3;
  int probe_every = 32;
};

// Decides step by step; told each step's time. Not thread-safe (the step loop's).
class OverlapChooser {
 public:
  explicit OverlapChooser(OverlapPolicy policy = {}) : policy_(policy) {}
  const OverlapPolicy& policy() const { return policy_; }

  // Whether a step of `tokens` tokens (decode: one per sequence) should run as two micro-batches.
  bool Split(int64_t tokens, bool decode);
  // How long the step took (the whole forward pass), run the way Split said.
  void Record(int64_t tokens, bool decode, bool split, double seconds);
  // One line per kind of step seen in auto mode: its median time per token each way and the
  // choice, e.g. "decode 64-127 tokens: whole 8.1 ms/token (3), split 14.9 ms/token (3) -> whole".
  std::string Describe() const;

 private:
  static constexpr int kWindow = 5;  // the recent times kept per way (the choice is their median)
  struct Way {
    std::array<double, kWindow> per_token{};
    int count = 0;  // times recorded (the window holds the last kWindow)
    double Median() const;
  };
  struct Kind {
    Way way[2];  // [0] whole, [1] split
    int64_t steps = 0;
    bool split_chosen = false;   // the choice since the trials ended
    int64_t probe_interval = 0;  // 0 until the trials end
    int64_t next_probe = 0;      // the step that tries the other way
  };
  using Key = std::pair<bool, int>;  // decode, floor(log2(tokens))
  static Key KeyOf(int64_t tokens, bool decode);
  // Whether the trials of this kind are over: `trials` steps each way, or two each way that
  // differ by more than kClearRatio.
  bool Decided(const Kind& kind) const;
  static constexpr double kClearRatio = 1.25;

  OverlapPolicy policy_;
  std::map<Key, Kind> kinds_;
};

}  // namespace moe
