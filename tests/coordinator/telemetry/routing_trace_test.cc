// The routing trace (docs/routing-trace-format.md): the writer's bytes against the spec's tables,
// the C++ reader on what the writer wrote (and on version 1, and on forged headers), the router
// entropy against a hand computation, the events file, and scripts/routing_trace.py reading the
// same files (tests/coordinator/telemetry/check_trace.py compares it with what this test expects).
#include "coordinator/telemetry/routing_trace.h"

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "coordinator/telemetry/routing_trace_reader.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moe {
namespace {

using ::testing::HasSubstr;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

MixtralConfig ThreeLayers() {
  MixtralConfig c;
  c.num_hidden_layers = 3;
  c.num_local_experts = 4;
  c.num_experts_per_tok = 2;
  return c;
}

// Router logits whose softmax is p = (1, 2, 3, 4) / 10 (row 0) and uniform (row 1), on every
// layer. Entropy by hand: -(0.1 ln 0.1 + 0.2 ln 0.2 + 0.3 ln 0.3 + 0.4 ln 0.4) and ln 4.
const std::vector<float> kLogits = {std::log(1.0f), std::log(2.0f), std::log(3.0f), std::log(4.0f),
                                    7.0f,           7.0f,           7.0f,           7.0f};
double HandEntropy() {
  double h = 0;
  for (double p : {0.1, 0.2, 0.3, 0.4}) h -= p * std::log(p);
  return h;
}

// A trace of 3 layers x 4 experts, top-2, on 2 workers: one step of two tokens (request 42 at
// position 7 feeding token 1000, decoding; request 43 at position 0 feeding token 1, a prompt
// token), each choosing experts {3, 1} with weights {0.75, 0.25} (row 0) and {0, 2} with
// {0.5, 0.5} (row 1) on every layer, with kLogits. `logits`: false leaves Routing::logits empty.
std::string WriteTwoTokenTrace(const std::string& name, bool logits = true) {
  const ExpertPlacement placement = *ExpertPlacement::Contiguous(3, 4, 2);
  const std::string path = ::testing::TempDir() + "/" + name;
  auto writer = RoutingTraceWriter::Open(path, ThreeLayers(), &placement);
  EXPECT_TRUE(writer.ok()) << writer.status();
  if (!writer.ok()) return path;
  Routing r;
  r.top_k = 2;
  r.expert = {3, 1, 0, 2};
  r.weight = {0.75f, 0.25f, 0.5f, 0.5f};
  if (logits) r.logits = kLogits;
  (*writer)->OnForward(std::vector<RoutedToken>{{42, 7, 1000, false}, {43, 0, 1, true}},
                       std::vector<Routing>{r, r, r});
  EXPECT_TRUE((*writer)->Close().ok());
  return path;
}

TEST(RoutingTraceTest, WritesTheDocumentedLayout) {
  const std::string path = WriteTwoTokenTrace("trace.bin");
  const std::string bytes = ReadFile(path);
  const size_t header = RoutingTraceWriter::HeaderBytes(3, 4),
               record = RoutingTraceWriter::RecordBytes(3, 2);
  EXPECT_EQ(header, 64u + 24u);             // 2 * 3 * 4 = 24 bytes of placement
  EXPECT_EQ(record, 32u + 8u + 24u + 16u);  // 6 choices padded to 8, 6 weights, 3 entropies + 4 pad
  EXPECT_EQ(RoutingTraceWriter::RecordBytes(32, 2), 480u);  // the spec's Mixtral figure
  ASSERT_EQ(bytes.size(), header + 2 * record);
  EXPECT_EQ(bytes.substr(0, 8), "MOETRACE");
  auto u32 = [&](size_t at) {
    uint32_t v;
    std::memcpy(&v, bytes.data() + at, 4);
    return v;
  };
  EXPECT_EQ(u32(8), 2u);
  EXPECT_EQ(u32(12), header);
  EXPECT_EQ(u32(16), record);
  EXPECT_EQ(u32(32), 2u);
  int16_t owner;
  std::memcpy(&owner, bytes.data() + 64 + 2 * (1 * 4 + 3), 2);  // layer 1, expert 3
  EXPECT_EQ(owner, 2);
  const char* rec = bytes.data() + header + record;  // the second token
  uint64_t id;
  std::memcpy(&id, rec, 8);
  EXPECT_EQ(id, 43u);
  EXPECT_EQ(u32(header + record + 16), 1u);                // step 1
  EXPECT_EQ(static_cast<uint8_t>(rec[28]), 1);             // flags: prefill
  EXPECT_EQ(static_cast<uint8_t>(bytes[header + 28]), 0);  // the first token decodes
  EXPECT_EQ(rec[29] | rec[30] | rec[31], 0);               // reserved
  EXPECT_EQ(static_cast<uint8_t>(rec[32]), 0);             // layer 0, choice 0 of row 1
  EXPECT_EQ(static_cast<uint8_t>(rec[33]), 2);
  float w;
  std::memcpy(&w, rec + 40 + 4 * 5, 4);  // layer 2, choice 1
  EXPECT_EQ(w, 0.5f);
  float entropy;
  std::memcpy(&entropy, rec + 64 + 4 * 2, 4);  // layer 2 of row 1: uniform over 4 experts
  EXPECT_NEAR(entropy, std::log(4.0), 1e-6);
  std::memcpy(&entropy, bytes.data() + header + 64, 4);  // layer 0 of row 0
  EXPECT_NEAR(entropy, HandEntropy(), 1e-6);
}

TEST(RoutingTraceTest, RouterEntropyAgainstHandComputations) {
  EXPECT_NEAR(RoutingTraceWriter::RouterEntropy(kLogits.data(), 4), HandEntropy(), 1e-6);
  // Shifted logits give the same distribution; huge ones must not overflow.
  const float huge[] = {1000.0f, 1000.0f, 1000.0f, 1000.0f, 1000.0f, 1000.0f, 1000.0f, 1000.0f};
  EXPECT_NEAR(RoutingTraceWriter::RouterEntropy(huge, 8), std::log(8.0), 1e-12);
  // One expert far ahead: almost certain.
  const float sure[] = {0.0f, -100.0f, -100.0f};
  EXPECT_NEAR(RoutingTraceWriter::RouterEntropy(sure, 3), 0.0, 1e-30);
  // Two of three equal, the third impossible: ln 2.
  const float two[] = {3.0f, 3.0f, -INFINITY};
  EXPECT_NEAR(RoutingTraceWriter::RouterEntropy(two, 3), std::log(2.0), 1e-12);
  const float none[] = {NAN, NAN};
  EXPECT_TRUE(std::isnan(RoutingTraceWriter::RouterEntropy(none, 2)));
}

// The reader (moe-plan-placement --trace) gives back what the writer wrote, and refuses what a
// writer could not have written, naming the fault.
TEST(RoutingTraceTest, ReaderReadsWhatTheWriterWrote) {
  const std::string path = WriteTwoTokenTrace("trace-read.bin");

  absl::StatusOr<RoutingTrace> t = RoutingTrace::Open(path);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->version(), 2);
  EXPECT_EQ(t->n_layers(), 3);
  EXPECT_EQ(t->n_experts(), 4);
  EXPECT_EQ(t->top_k(), 2);
  EXPECT_EQ(t->n_workers(), 2);
  ASSERT_EQ(t->n_records(), 2);
  EXPECT_EQ(t->dropped_bytes(), 0);
  EXPECT_EQ(t->placement(1, 3), 2);
  EXPECT_EQ(t->request_id(1), 43u);
  EXPECT_EQ(t->position(0), 7);
  EXPECT_EQ(t->token_id(0), 1000);
  EXPECT_EQ(t->step(1), 1u);
  EXPECT_EQ(t->expert(1, 2, 1), 2);
  EXPECT_EQ(t->weight(0, 0, 0), 0.75f);
  EXPECT_FALSE(t->prefill(0));
  EXPECT_TRUE(t->prefill(1));
  EXPECT_EQ(t->flags(1), 1);
  for (int l = 0; l < 3; ++l) {
    EXPECT_NEAR(t->entropy(0, l), HandEntropy(), 1e-6);
    EXPECT_NEAR(t->entropy(1, l), std::log(4.0), 1e-6);
  }
  // Row 0 chose {3, 1}, row 1 {0, 2}, on every layer.
  for (const std::vector<int64_t>& layer : t->ExpertCounts())
    EXPECT_EQ(layer, (std::vector<int64_t>{1, 1, 1, 1}));

  const std::string good = ReadFile(path);
  const size_t header = RoutingTraceWriter::HeaderBytes(3, 4),
               record = RoutingTraceWriter::RecordBytes(3, 2);
  auto error = [](std::string bytes) {
    absl::StatusOr<RoutingTrace> t = RoutingTrace::Parse(std::move(bytes), "t");
    return t.ok() ? std::string("ok") : std::string(t.status().message());
  };
  auto with = [&](size_t at, const void* value, size_t n) {
    std::string bytes = good;
    std::memcpy(bytes.data() + at, value, n);
    return bytes;
  };
  const uint32_t big = 0xffffffffu, zero = 0, one = 1, two = 2, three = 3;
  const int16_t rank_three = 3;
  const uint8_t expert_nine = 9;
  const double nan = std::nan("");
  EXPECT_EQ(error(good.substr(0, good.size() - 5)), "ok") << "a partial last record is dropped";
  EXPECT_EQ(RoutingTrace::Parse(good.substr(0, good.size() - 5), "t")->n_records(), 1);
  EXPECT_THAT(error(good.substr(0, 63)), HasSubstr("shorter than the 64-byte header"));
  EXPECT_THAT(error(good.substr(0, header - 1)), HasSubstr("truncated header"));
  EXPECT_THAT(error("X" + good.substr(1)), HasSubstr("no MOETRACE magic"));
  EXPECT_THAT(error(with(8, &three, 4)), HasSubstr("version 3 is not supported"));
  EXPECT_THAT(error(with(8, &zero, 4)), HasSubstr("version 0 is not supported"));
  // A version-1 header over version-2 records: the record size gives it away.
  EXPECT_THAT(error(with(8, &one, 4)), HasSubstr("record_bytes is 80, expected 64"));
  EXPECT_THAT(error(with(20, &zero, 4)), HasSubstr("n_layers is 0"));
  EXPECT_THAT(error(with(20, &big, 4)), HasSubstr("header_bytes is 88, expected"));
  EXPECT_THAT(error(with(24, &big, 4)), HasSubstr("n_experts 4294967295 is not in 1..255"));
  EXPECT_THAT(error(with(28, &big, 4)), HasSubstr("top_k 4294967295"));
  EXPECT_THAT(error(with(16, &two, 4)), HasSubstr("record_bytes is 2, expected 80"));
  EXPECT_THAT(error(with(32, &big, 4)), HasSubstr("n_workers 4294967295 is above 32767"));
  EXPECT_THAT(error(with(40, &nan, 8)), HasSubstr("start time is nan"));
  EXPECT_THAT(error(with(64 + 2, &rank_three, 2)),
              HasSubstr("layer 0 expert 1 is on rank 3, outside 1..2"));
  EXPECT_THAT(error(with(header + record + 33, &expert_nine, 1)),
              HasSubstr("record 1: expert id 9 out of range"));
  EXPECT_THAT(error(with(header + 8, &nan, 8)), HasSubstr("record 0: time is not a finite number"));
  EXPECT_FALSE(RoutingTrace::Open("/nonexistent/trace.bin").ok());
}

// Version 1, as the writer wrote it before version 2 (built here from the version-1 table): every
// field but the new ones reads back; flags are 0 and entropies NaN.
TEST(RoutingTraceTest, ReaderReadsVersionOne) {
  const std::string v2 = ReadFile(WriteTwoTokenTrace("trace-v1-source.bin"));
  const size_t header = RoutingTraceWriter::HeaderBytes(3, 4),
               record2 = RoutingTraceWriter::RecordBytes(3, 2);
  const size_t record1 = 64;  // 32 + 8 + 24, a multiple of 8
  std::string v1 = v2.substr(0, header);
  const uint32_t one = 1, size1 = static_cast<uint32_t>(record1);
  std::memcpy(v1.data() + 8, &one, 4);
  std::memcpy(v1.data() + 16, &size1, 4);
  for (size_t i = 0; i < 2; ++i) {
    std::string rec = v2.substr(header + i * record2, record1);
    std::memset(rec.data() + 28, 0, 4);  // version 1: a reserved u32
    v1 += rec;
  }
  absl::StatusOr<RoutingTrace> t = RoutingTrace::Parse(v1, "v1");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->version(), 1);
  ASSERT_EQ(t->n_records(), 2);
  EXPECT_EQ(t->request_id(1), 43u);
  EXPECT_EQ(t->expert(1, 2, 1), 2);
  EXPECT_EQ(t->weight(0, 2, 1), 0.25f);
  EXPECT_EQ(t->flags(1), 0);
  EXPECT_FALSE(t->prefill(1));
  EXPECT_TRUE(std::isnan(t->entropy(0, 0)));
}

TEST(RoutingTraceTest, NoLogitsGiveNanEntropy) {
  absl::StatusOr<RoutingTrace> t =
      RoutingTrace::Open(WriteTwoTokenTrace("trace-nologits.bin", false));
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_TRUE(std::isnan(t->entropy(0, 1)));
  EXPECT_EQ(t->expert(0, 1, 0), 3);
}

TEST(RoutingTraceTest, UnwritablePathIsAnError) {
  MixtralConfig c;
  auto writer = RoutingTraceWriter::Open("/nonexistent-dir/trace.bin", c, nullptr);
  EXPECT_FALSE(writer.ok());
  EXPECT_THAT(std::string(writer.status().message()), HasSubstr("/nonexistent-dir/trace.bin"));
}

double SteadyNow() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// The value of `"key":` in one JSON line (the writer's lines are flat but for the lists).
std::string Field(const std::string& line, const std::string& key) {
  const std::string tag = "\"" + key + "\":";
  const size_t at = line.find(tag);
  if (at == std::string::npos) return "<missing>";
  const size_t begin = at + tag.size();
  size_t end = begin;
  if (line[begin] == '[') {
    end = line.find(']', begin) + 1;
  } else {
    end = line.find_first_of(",}", begin);
  }
  return line.substr(begin, end - begin);
}

// Two steps on 2 workers with hand-made exchange records, a labelled sequence and an unlabelled
// one: the events file holds the sequences, their ends and each step's sums; step times equal the
// records' to the bit. Then scripts/routing_trace.py must read both files to the same values.
TEST(RoutingTraceTest, EventsFileAndPythonLoader) {
  const ExpertPlacement placement = *ExpertPlacement::Contiguous(3, 4, 2);
  const std::string path = ::testing::TempDir() + "/trace-events.bin";
  auto opened = RoutingTraceWriter::Open(path, ThreeLayers(), &placement);
  ASSERT_TRUE(opened.ok()) << opened.status();
  RoutingTraceWriter& writer = **opened;
  Routing r;
  r.top_k = 2;
  r.expert = {3, 1, 0, 2};
  r.weight = {0.75f, 0.25f, 0.5f, 0.5f};
  r.logits = kLogits;
  const std::vector<Routing> routing{r, r, r};

  SequenceInfo chat;
  chat.label = "chat:v1";
  chat.prompt_tokens = 5;
  chat.max_tokens = 16;
  chat.arrival_seconds = SteadyNow();
  writer.OnSequenceStart(7, chat);
  writer.OnSequenceStart(8, SequenceInfo{"", 1, 2, 0});  // arrival unknown: now
  // Step 1: two exchanges (layers 0 and 1); per rank compute (0.25, 0.75) and (0.5, 0.125)
  // seconds, rows (3, 1) and (1, 3). Straggler: (0.75 - 0.5) + (0.5 - 0.3125) = 0.4375.
  const double s0[] = {0, 0.25, 0.75}, s1[] = {0, 0.5, 0.125};
  const int64_t r0[] = {0, 3, 1}, r1[] = {0, 1, 3};
  writer.OnStepBegin();
  writer.OnExchange(ExchangeRecord{0, 0.5, s0, r0});
  writer.OnExchange(ExchangeRecord{1, 0.25, s1, r1});
  writer.OnForward(std::vector<RoutedToken>{{7, 4, 11, true}, {8, 0, 1, true}}, routing);
  writer.OnStepEnd();
  // Step 2 starts from zero: one exchange only.
  writer.OnStepBegin();
  writer.OnExchange(ExchangeRecord{0, 0.125, s1, r1});
  writer.OnForward(std::vector<RoutedToken>{{7, 5, 12, false}, {8, 1, 13, false}}, routing);
  writer.OnStepEnd();
  writer.OnSequenceEnd(8);
  // A failed step (no OnForward) leaves no line and its exchanges do not leak into the next.
  writer.OnStepBegin();
  writer.OnExchange(ExchangeRecord{0, 9.0, s0, r0});
  writer.OnStepEnd();
  ASSERT_TRUE(writer.Close().ok());

  absl::StatusOr<RoutingTrace> t = RoutingTrace::Open(path);
  ASSERT_TRUE(t.ok()) << t.status();
  ASSERT_EQ(t->n_records(), 4);
  const std::vector<std::string> lines =
      absl::StrSplit(ReadFile(RoutingTraceWriter::EventsPath(path)), '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 5u) << absl::StrJoin(lines, "\n");
  EXPECT_EQ(Field(lines[0], "event"), "\"sequence\"");
  EXPECT_EQ(Field(lines[0], "request_id"), "7");
  EXPECT_EQ(Field(lines[0], "label"), "\"chat:v1\"");
  EXPECT_EQ(Field(lines[0], "prompt_tokens"), "5");
  EXPECT_EQ(Field(lines[0], "max_tokens"), "16");
  const double arrival = std::strtod(Field(lines[0], "time").c_str(), nullptr);
  EXPECT_LE(arrival, t->time(0));  // arrived before its first record
  EXPECT_GT(arrival, -1.0);
  EXPECT_EQ(Field(lines[1], "label"), "\"\"");
  const std::string& step1 = lines[2];
  EXPECT_EQ(Field(step1, "event"), "\"step\"");
  EXPECT_EQ(Field(step1, "step"), "1");
  EXPECT_EQ(std::strtod(Field(step1, "time").c_str(), nullptr), t->time(0));  // to the bit
  EXPECT_EQ(Field(step1, "rows"), "2");
  EXPECT_EQ(Field(step1, "prefill_rows"), "2");
  EXPECT_EQ(Field(step1, "exchange_seconds"), "0.75");
  EXPECT_EQ(Field(step1, "worker_compute_seconds"), "[0.75,0.875]");
  EXPECT_EQ(Field(step1, "worker_rows"), "[4,4]");
  EXPECT_EQ(Field(step1, "straggler_seconds"), "0.4375");
  const std::string& step2 = lines[3];
  EXPECT_EQ(Field(step2, "step"), "2");
  EXPECT_EQ(std::strtod(Field(step2, "time").c_str(), nullptr), t->time(2));
  EXPECT_EQ(Field(step2, "prefill_rows"), "0");
  EXPECT_EQ(Field(step2, "exchange_seconds"), "0.125");
  EXPECT_EQ(Field(step2, "worker_compute_seconds"), "[0.5,0.125]");
  EXPECT_EQ(Field(step2, "worker_rows"), "[1,3]");
  EXPECT_EQ(Field(step2, "straggler_seconds"), "0.1875");
  EXPECT_EQ(Field(lines[4], "event"), "\"sequence_end\"");
  EXPECT_EQ(Field(lines[4], "request_id"), "8");
  EXPECT_TRUE(t->prefill(0) && t->prefill(1) && !t->prefill(2) && !t->prefill(3));

  // The Python loader on the same two files, against what the C++ side read.
  const char* python = "/usr/bin/python3";
  if (!std::ifstream(python).good()) GTEST_SKIP() << "no " << python << " for the Python loader";
  const std::string expected = ::testing::TempDir() + "/trace-events.expected.json";
  {
    std::ofstream out(expected);
    std::vector<std::string> entropy, times;
    for (int64_t i = 0; i < t->n_records(); ++i) {
      std::vector<std::string> row;
      for (int l = 0; l < 3; ++l) row.push_back(absl::StrFormat("%.9g", t->entropy(i, l)));
      entropy.push_back(absl::StrCat("[", absl::StrJoin(row, ","), "]"));
      times.push_back(absl::StrFormat("%.17g", t->time(i)));
    }
    out << "{\"request_id\":[7,8,7,8],\"position\":[4,0,5,1],\"flags\":[1,1,0,0],\"entropy\":["
        << absl::StrJoin(entropy, ",") << "],\"time\":[" << absl::StrJoin(times, ",")
        << "],\"sequences\":{\"7\":{\"label\":\"chat:v1\",\"prompt_tokens\":5,\"max_tokens\":16,"
        << "\"time\":" << Field(lines[0], "time") << ",\"end_time\":null},\"8\":{\"label\":\"\","
        << "\"prompt_tokens\":1,\"max_tokens\":2,\"time\":" << Field(lines[1], "time")
        << ",\"end_time\":" << Field(lines[4], "time")
        << "}},\"steps\":[{\"step\":1,\"time\":" << Field(step1, "time")
        << ",\"rows\":2,\"prefill_rows\":2,\"exchange_seconds\":0.75,"
        << "\"worker_compute_seconds\":[0.75,0.875],\"worker_rows\":[4,4],\"straggler_seconds\":0."
           "4375},"
        << "{\"step\":2,\"time\":" << Field(step2, "time") << ",\"rows\":2,\"prefill_rows\":0,"
        << "\"exchange_seconds\":0.125,\"worker_compute_seconds\":[0.5,0.125],\"worker_rows\":[1,3]"
           ","
        << "\"straggler_seconds\":0.1875}]}";
  }
  const std::string command =
      absl::StrCat(python, " ", MOE_SOURCE_DIR, "/tests/coordinator/telemetry/check_trace.py ",
                   MOE_SOURCE_DIR, " ", path, " ", expected);
  EXPECT_EQ(std::system(command.c_str()), 0) << command;
}

}  // namespace
}  // namespace moe
