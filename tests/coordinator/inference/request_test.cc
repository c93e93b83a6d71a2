// Request::Validate: the one check every entry point's requests go through (the gRPC service via
// Scheduler::Submit, the generate modes before they submit), naming the field in the caller's
// words.
#include "coordinator/inference/request.h"

#include <string>

#include "gtest/gtest.h"

namespace moe {
namespace {

MixtralConfig Config() {
  MixtralConfig c;
  c.vocab_size = 100;
  c.max_position_embeddings = 64;
  c.eos_token_ids = {2, 7};
  return c;
}

Request Valid() {
  Request r;
  r.prompt = {1, 5, 99};
  r.max_tokens = 8;
  return r;
}

// The message of a refused request, "" when it is accepted.
std::string Refusal(const Request& r, RequestLimits limits = {},
                    const RequestFieldNames& names = {}) {
  const absl::Status s = r.Validate(Config(), limits, names);
  if (s.ok()) return "";
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  return std::string(s.message());
}

TEST(RequestTest, AcceptsARequestWithinEveryLimit) {
  EXPECT_EQ(Refusal(Valid()), "");
  Request edge = Valid();
  edge.max_tokens = 64 - 3;  // exactly the context
  EXPECT_EQ(Refusal(edge), "");
}

TEST(RequestTest, NamesTheFieldThatIsWrong) {
  Request r = Valid();
  r.prompt.clear();
  EXPECT_EQ(Refusal(r), "the prompt is empty");
  r = Valid();
  r.prompt.push_back(100);
  EXPECT_EQ(Refusal(r), "prompt token id 100 is outside the vocabulary [0, 100)");
  r = Valid();
  r.prompt[0] = -1;
  EXPECT_EQ(Refusal(r), "prompt token id -1 is outside the vocabulary [0, 100)");
  r = Valid();
  r.max_tokens = 0;
  EXPECT_EQ(Refusal(r), "sampling.max_tokens must be >= 1, got 0");
  r = Valid();
  r.max_tokens = 62;
  EXPECT_EQ(
      Refusal(r),
      "prompt (3 tokens) + sampling.max_tokens (62) exceeds the model's context of 64 positions");
  r = Valid();
  r.sampling.temperature = -1;
  EXPECT_EQ(Refusal(r), "sampling.temperature must be >= 0, got -1");
  r = Valid();
  r.sampling.top_p = 0;
  EXPECT_EQ(Refusal(r), "sampling.top_p must be in (0, 1], got 0");
  r.sampling.top_p = 1.0000001f;  // every digit the float holds, not "1"
  EXPECT_EQ(Refusal(r), "sampling.top_p must be in (0, 1], got 1.00000012");
  r = Valid();
  r.sampling.top_k = -2;
  EXPECT_EQ(Refusal(r), "sampling.top_k must be >= 0, got -2");
}

// Stop strings are matched on the engine thread at every token and hold streamed text back while
// they may match: their number and length are bounded, and an empty one (which would match
// everywhere) is refused.
TEST(RequestTest, StopStringsAreBounded) {
  RequestLimits limits;
  limits.max_stop_strings = 2;
  limits.max_stop_bytes = 4;
  Request r = Valid();
  r.stop = {"ab", "abcd"};
  EXPECT_EQ(Refusal(r, limits), "");
  r.stop = {"a", "b", "c"};
  EXPECT_EQ(Refusal(r, limits), "sampling.stop holds 3 strings; the server's limit is 2");
  r.stop = {"abcde"};
  EXPECT_EQ(Refusal(r, limits), "sampling.stop holds a string of 5 bytes; the server's limit is 4");
  r.stop = {"a", ""};
  EXPECT_EQ(Refusal(r, limits), "sampling.stop holds an empty string");
  EXPECT_EQ(Refusal(r, limits, RequestFieldNames{"max_new_tokens", "", "stop"}),
            "stop holds an empty string");
}

TEST(RequestTest, TheServersLimitComesBeforeTheModelsContext) {
  Request r = Valid();
  r.max_tokens = 5000;
  EXPECT_EQ(Refusal(r, RequestLimits{256}),
            "sampling.max_tokens (5000) exceeds the server's limit of 256");
}

TEST(RequestTest, EachInterfaceNamesItsOwnFields) {
  const RequestFieldNames flags{"max_new_tokens", ""};
  Request r = Valid();
  r.max_tokens = 0;
  EXPECT_EQ(Refusal(r, {}, flags), "max_new_tokens must be >= 1, got 0");
  r = Valid();
  r.sampling.temperature = -0.5f;
  EXPECT_EQ(Refusal(r, {}, flags), "temperature must be >= 0, got -0.5");
}

// The label names a workload in telemetry, Prometheus and the trace's JSON: short, and of
// characters none of them needs to escape.
TEST(RequestTest, LabelIsShortAndPlain) {
  Request r = Valid();
  for (const char* good : {"", "chat", "eval:gsm8k-v2.1_b", "A-Z.a_z:0-9"}) {
    r.label = good;
    EXPECT_EQ(Refusal(r), "") << good;
  }
  r.label = std::string(64, 'x');
  EXPECT_EQ(Refusal(r), "");
  r.label = std::string(65, 'x');
  EXPECT_EQ(Refusal(r), "label is 65 bytes; at most 64 are allowed");
  r.label = "chat bot";
  EXPECT_EQ(Refusal(r), "label may hold only letters, digits and . _ : - (found byte 0x20)");
  r.label = "a\"b";
  EXPECT_EQ(Refusal(r), "label may hold only letters, digits and . _ : - (found byte 0x22)");
  r.label = "caf\xc3\xa9";
  EXPECT_EQ(Refusal(r), "label may hold only letters, digits and . _ : - (found byte 0xc3)");
  r.label = std::string("a\0b", 3);
  EXPECT_EQ(Refusal(r), "label may hold only letters, digits and . _ : - (found byte 0x00)");
  RequestFieldNames flags;
  flags.label = "--label";
  EXPECT_EQ(Refusal(r, {}, flags),
            "--label may hold only letters, digits and . _ : - (found byte 0x00)");
}

TEST(RequestTest, LimitsMustBePositive) {
  EXPECT_TRUE(RequestLimits{1}.Validate().ok());
  EXPECT_FALSE(RequestLimits{0}.Validate().ok());
}

TEST(RequestTest, OneEndOfSequenceRuleAndOneSpellingOfTheFinish) {
  const MixtralConfig c = Config();
  EXPECT_TRUE(c.IsEos(2));
  EXPECT_TRUE(c.IsEos(7));
  EXPECT_FALSE(c.IsEos(1));
  EXPECT_STREQ(FinishReasonName(FinishReason::kEos), "eos");
  EXPECT_STREQ(FinishReasonName(FinishReason::kLength), "length");
  EXPECT_STREQ(FinishReasonName(FinishReason::kStop), "stop");
  EXPECT_STREQ(FinishReasonName(FinishReason::kNone), "");
}

}  // namespace
}  // namespace moe
