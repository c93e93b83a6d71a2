// The overlap chooser: forced modes, the token floor, trials both ways, the choice by measured
// time, the probes that let it change its mind, and kinds of step kept apart.
#include "coordinator/inference/overlap_policy.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace moe {
namespace {

OverlapPolicy Auto(int64_t min_tokens = 64, int trials = 3, int probe_every = 8) {
  OverlapPolicy p;
  p.mode = OverlapPolicy::Mode::kAuto;
  p.min_tokens = min_tokens;
  p.trials = trials;
  p.probe_every = probe_every;
  return p;
}

// Runs `steps` steps of one kind; each takes whole_s or split_s seconds as chosen. Returns the
// choices (true: split).
std::vector<bool> Steps(OverlapChooser* chooser, int steps, int64_t tokens, bool decode,
                        double whole_s, double split_s) {
  std::vector<bool> choices;
  for (int i = 0; i < steps; ++i) {
    const bool split = chooser->Split(tokens, decode);
    chooser->Record(tokens, decode, split, split ? split_s : whole_s);
    choices.push_back(split);
  }
  return choices;
}

int Count(const std::vector<bool>& v, bool value, size_t from = 0) {
  int n = 0;
  for (size_t i = from; i < v.size(); ++i) n += v[i] == value;
  return n;
}

TEST(OverlapChooserTest, ForcedModesIgnoreSizeAndTime) {
  OverlapChooser on(OverlapPolicy{OverlapPolicy::Mode::kOn, 64});
  OverlapChooser off(OverlapPolicy{OverlapPolicy::Mode::kOff, 64});
  for (int64_t tokens : {2, 63, 64, 4096}) {
    EXPECT_TRUE(on.Split(tokens, true));
    EXPECT_FALSE(off.Split(tokens, true));
  }
  EXPECT_EQ(Count(Steps(&on, 20, 128, true, 0.001, 1.0), true), 20);
  EXPECT_EQ(Count(Steps(&off, 20, 128, true, 1.0, 0.001), false), 20);
}

TEST(OverlapChooserTest, NeverSplitsBelowTheFloor) {
  OverlapChooser chooser(Auto(64));
  // Even when splitting would be much faster: small decode batches are not tried.
  EXPECT_EQ(Count(Steps(&chooser, 50, 63, true, 1.0, 0.01), true), 0);
  EXPECT_EQ(chooser.Describe(), "");
}

TEST(OverlapChooserTest, TriesBothWaysThenKeepsTheFaster) {
  OverlapChooser chooser(Auto(64, /*trials=*/3, /*probe_every=*/8));
  // 15% apart: close enough that all three trials run.
  const std::vector<bool> c = Steps(&chooser, 40, 64, true, /*whole_s=*/0.010, /*split_s=*/0.0085);
  // Alternating trials: whole, split, whole, split, whole, split.
  for (int i = 0; i < 6; ++i) EXPECT_EQ(c[i], i % 2 == 1) << "step " << i;
  // Then split, except probes of the other way 8, then 16 steps after the choice (steps 14, 30).
  for (int i = 6; i < 40; ++i) EXPECT_EQ(c[i], i != 14 && i != 30) << "step " << i;
  EXPECT_NE(chooser.Describe().find("decode 64-127 tokens: whole 0.156 ms/token"),
            std::string::npos)
      << chooser.Describe();
  EXPECT_NE(chooser.Describe().find("split 0.133 ms/token"), std::string::npos)
      << chooser.Describe();
  EXPECT_NE(chooser.Describe().find("-> split"), std::string::npos) << chooser.Describe();
}

TEST(OverlapChooserTest, KeepsWholeStepsWhereSplittingLoses) {
  // The Mixtral slice at 64 sequences on two cores: split steps take 1.85x as long. So clear a
  // difference ends the trials after two steps each way, and the probes thin out: 32, 64, 128,
  // 256 steps apart, then every 256.
  OverlapChooser chooser(Auto(64, 3, 32));
  const std::vector<bool> c = Steps(&chooser, 1000, 64, true, 0.53, 0.98);
  EXPECT_EQ(std::vector<bool>(c.begin(), c.begin() + 6),
            (std::vector<bool>{false, true, false, true, false, false}));
  std::vector<int> probes;
  for (int i = 4; i < 1000; ++i) {
    if (c[i]) probes.push_back(i);
  }
  EXPECT_EQ(probes, (std::vector<int>{36, 100, 228, 484, 740, 996}));
  EXPECT_NE(chooser.Describe().find("-> whole"), std::string::npos) << chooser.Describe();
}

TEST(OverlapChooserTest, ProbesNoticeAChange) {
  OverlapChooser chooser(Auto(64, 3, 4));
  Steps(&chooser, 30, 100, false, 0.010, 0.020);  // whole is faster
  EXPECT_NE(chooser.Describe().find("-> whole"), std::string::npos);
  // The machine changes (say, the workers move to faster hardware): the probes pick it up once the
  // recent split steps outnumber the old ones in the median, within three probes (at most 32
  // steps apart here).
  const std::vector<bool> c = Steps(&chooser, 120, 100, false, 0.010, 0.005);
  EXPECT_TRUE(c.back());
  EXPECT_GE(Count(c, true, 100), 18);
  EXPECT_NE(chooser.Describe().find("-> split"), std::string::npos) << chooser.Describe();
}

TEST(OverlapChooserTest, KindsOfStepAreTimedApart) {
  OverlapChooser chooser(Auto(64, 2, 0));
  // Decode at 64-127 tokens gains from splitting; prefill of the same size and decode at 128-255
  // lose. Interleaved, each kind still settles on its own way.
  for (int i = 0; i < 20; ++i) {
    Steps(&chooser, 1, 64, true, 0.010, 0.005);
    Steps(&chooser, 1, 64, false, 0.010, 0.020);
    Steps(&chooser, 1, 200, true, 0.010, 0.020);
  }
  EXPECT_TRUE(chooser.Split(100, true));
  EXPECT_FALSE(chooser.Split(100, false));
  EXPECT_FALSE(chooser.Split(128, true));
  const std::string d = chooser.Describe();
  EXPECT_NE(d.find("decode 64-127 tokens:"), std::string::npos) << d;
  EXPECT_NE(d.find("decode 128-255 tokens:"), std::string::npos) << d;
  EXPECT_NE(d.find("prefill 64-127 tokens:"), std::string::npos) << d;
}

}  // namespace
}  // namespace moe
