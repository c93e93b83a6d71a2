// The pieces that format telemetry: imbalance math, Prometheus text, the routing trace file, the
// worker's load recorder and the load view.
#include <cstdio>
#include <fstream>
#include <sstream>

#include "coordinator/client/load_view.h"
#include "coordinator/telemetry/imbalance.h"
#include "coordinator/telemetry/load_metrics.h"
#include "coordinator/telemetry/prometheus_text.h"
#include "coordinator/telemetry/request_metrics.h"
#include "coordinator/telemetry/routing_trace.h"
#include "coordinator/telemetry/routing_trace_reader.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/load_recorder.h"

namespace moe {
namespace {

using ::testing::HasSubstr;

TEST(ImbalanceTest, KnownValues) {
  const std::vector<double> x = {4, 2, 2, 0};  // mean 2, max 4, std sqrt(2)
  const LoadImbalance im = ComputeImbalance(x);
  EXPECT_DOUBLE_EQ(im.balancedness, 0.5);
  EXPECT_DOUBLE_EQ(im.imbalance_ratio, 1.0);
  EXPECT_DOUBLE_EQ(im.cv, std::sqrt(2.0) / 2.0);
  const LoadImbalance zero = ComputeImbalance(std::vector<double>{0, 0});
  EXPECT_EQ(zero.balancedness, 1.0);
  EXPECT_EQ(zero.imbalance_ratio, 0.0);
  EXPECT_EQ(zero.cv, 0.0);
  // Overall: layers {4,0} and {1,1}: means 2 + 1, maxima 4 + 1; summed loads {5,1}: CV 4/6.
  const LoadImbalance all = ComputeOverallImbalance({{4, 0}, {1, 1}});
  EXPECT_DOUBLE_EQ(all.balancedness, 3.0 / 5.0);
  EXPECT_DOUBLE_EQ(all.imbalance_ratio, 2.0 / 3.0);
  EXPECT_DOUBLE_EQ(all.cv, 2.0 / 3.0);
}

TEST(ImbalanceTest, ChanceOfLocality) {
  EXPECT_DOUBLE_EQ(ChanceFirstChoiceRepeat(8), 0.125);
  EXPECT_NEAR(ChanceSetOverlap(8, 2), 1.0 - 15.0 / 28.0, 1e-15);  // Mixtral: about 46%
  EXPECT_DOUBLE_EQ(ChanceSetOverlap(4, 1), 0.25);
  EXPECT_DOUBLE_EQ(ChanceSetOverlap(3, 2), 1.0);  // two pairs out of three experts must share
}

TEST(PrometheusTextTest, FamiliesLabelsAndEscaping) {
  PrometheusText t;
  t.Family("moe_x_total", "counter", "An x.");
  t.Sample("moe_x_total", {{"host", "a\"b\\c\nd"}}, 3);
  t.Sample("moe_y", 0.25);
  EXPECT_EQ(t.text(),
            "# HELP moe_x_total An x.\n# TYPE moe_x_total counter\n"
            "moe_x_total{host=\"a\\\"b\\\\c\\nd\"} 3\nmoe_y 0.25\n");
}

TEST(PrometheusTextTest, HistogramIsCumulative) {
  RequestMetrics m;
  m.RecordFinished("length", 5, 3, 0.02, 0.2);
  m.RecordFinished("eos", 5, 1, 3.0, 3.0);
  m.RecordFailed("INVALID_ARGUMENT");
  PrometheusText t;
  m.Render(&t);
  EXPECT_THAT(t.text(), HasSubstr("moe_requests_total{outcome=\"INVALID_ARGUMENT\"} 1\n"));
  EXPECT_THAT(t.text(), HasSubstr("moe_requests_total{outcome=\"length\"} 1\n"));
  EXPECT_THAT(t.text(), HasSubstr("moe_time_to_first_token_seconds_bucket{le=\"0.025\"} 1\n"));
  EXPECT_THAT(t.text(), HasSubstr("moe_time_to_first_token_seconds_bucket{le=\"2.5\"} 1\n"));
  EXPECT_THAT(t.text(), HasSubstr("moe_time_to_first_token_seconds_bucket{le=\"5\"} 2\n"));
  EXPECT_THAT(t.text(), HasSubstr("moe_time_to_first_token_seconds_bucket{le=\"+Inf\"} 2\n"));
  EXPECT_THAT(t.text(), HasSubstr("moe_time_to_first_token_seconds_count 2\n"));
  EXPECT_THAT(t.text(), HasSubstr("moe_generated_tokens_total 4\n"));
  // (0.2 - 0.02) / 2 = 0.09 s per token after the first; a 1-token request has no such time.
  EXPECT_THAT(t.text(), HasSubstr("moe_time_per_output_token_seconds_count 1\n"));
}

TEST(PrometheusTextTest, LoadMetricsKeepEachFamilyContiguous) {
  LoadSnapshot s;
  s.num_workers = 2;
  for (int l = 0; l < 2; ++l) {
    LayerLoad& layer = s.layers.emplace_back();
    layer.layer = l;
    for (int e = 0; e < 3; ++e) {
      layer.expert_tokens.push_back(l * 10 + e);
      layer.expert_window_tokens.push_back(e);
    }
  }
  s.workers.emplace_back().rank = 1;
  s.workers.emplace_back().rank = 2;
  PrometheusText t;
  RenderLoadMetrics(s, &t);
  EXPECT_THAT(t.text(), HasSubstr("moe_expert_tokens_total{layer=\"1\",expert=\"2\"} 12\n"));
  EXPECT_THAT(t.text(), HasSubstr("moe_balancedness{scope=\"workers\",layer=\"all\"}"));
  EXPECT_THAT(t.text(), HasSubstr("moe_worker_up{worker=\"2\"} 0\n"));
  // The exposition format wants all samples of a family together, after its TYPE line.
  std::istringstream lines(t.text());
  std::string line, family;
  std::set<std::string> finished;
  for (int n = 0; std::getline(lines, line); ++n) {
    if (line.rfind("# TYPE ", 0) == 0) {
      if (!family.empty()) finished.insert(family);
      family = line.substr(7, line.find(' ', 7) - 7);
      EXPECT_EQ(finished.count(family), 0u) << "family " << family << " appears twice";
      continue;
    }
    if (line[0] == '#') continue;
    const std::string name = line.substr(0, line.find_first_of("{ "));
    EXPECT_TRUE(name == family || name.rfind(family + "_", 0) == 0) << line << " under " << family;
  }
}

// A trace of 3 layers x 4 experts, top-2, on 2 workers: one step of two tokens (request 42 at
// position 7 feeding token 1000, request 43 at position 0 feeding token 1), each choosing experts
// {3, 1} with weights {0.75, 0.25} (row 0) and {0, 2} with {0.5, 0.5} (row 1) on every layer.
std::string WriteTwoTokenTrace(const std::string& name) {
  MixtralConfig c;
  c.num_hidden_layers = 3;
  c.num_local_experts = 4;
  c.num_experts_per_tok = 2;
  const ExpertPlacement placement = *ExpertPlacement::Contiguous(3, 4, 2);
  const std::string path = ::testing::TempDir() + "/" + name;
  auto writer = RoutingTraceWriter::Open(path, c, &placement);
  EXPECT_TRUE(writer.ok()) << writer.status();
  if (!writer.ok()) return path;
  Routing r;
  r.top_k = 2;
  r.expert = {3, 1, 0, 2};
  r.weight = {0.75f, 0.25f, 0.5f, 0.5f};
  (*writer)->OnForward(std::vector<RoutedToken>{{42, 7, 1000}, {43, 0, 1}}, std::vector<Routing>{r, r, r});
  EXPECT_TRUE((*writer)->Close().ok());
  return path;
}

TEST(RoutingTraceTest, WritesTheDocumentedLayout) {
  const std::string path = WriteTwoTokenTrace("trace.bin");

  std::ifstream in(path, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t header = RoutingTraceWriter::HeaderBytes(3, 4), record = RoutingTraceWriter::RecordBytes(3, 2);
  EXPECT_EQ(header, 64u + 24u);                  // 2 * 3 * 4 = 24 bytes of placement
  EXPECT_EQ(record, 32u + 8u + 24u);             // 6 choices padded to 8, 6 floats
  ASSERT_EQ(bytes.size(), header + 2 * record);
  EXPECT_EQ(bytes.substr(0, 8), "MOETRACE");
  auto u32 = [&](size_t at) {
    uint32_t v;
    std::memcpy(&v, bytes.data() + at, 4);
    return v;
  };
  EXPECT_EQ(u32(8), 1u);
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
  EXPECT_EQ(u32(header + record + 16), 1u);  // step 1
  EXPECT_EQ(static_cast<uint8_t>(rec[32]), 0);  // layer 0, choice 0 of row 1
  EXPECT_EQ(static_cast<uint8_t>(rec[33]), 2);
  float w;
  std::memcpy(&w, rec + 40 + 4 * 5, 4);  // layer 2, choice 1
  EXPECT_EQ(w, 0.5f);
}

// The reader (moe-plan-placement --trace) gives back what the writer wrote, and refuses what a
// writer could not have written, naming the fault.
TEST(RoutingTraceTest, ReaderReadsWhatTheWriterWrote) {
  const std::string path = WriteTwoTokenTrace("trace-read.bin");

  absl::StatusOr<RoutingTrace> t = RoutingTrace::Open(path);
  ASSERT_TRUE(t.ok()) << t.status();
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
  // Row 0 chose {3, 1}, row 1 {0, 2}, on every layer.
  for (const std::vector<int64_t>& layer : t->ExpertCounts()) EXPECT_EQ(layer, (std::vector<int64_t>{1, 1, 1, 1}));

  std::ifstream in(path, std::ios::binary);
  const std::string good((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t header = RoutingTraceWriter::HeaderBytes(3, 4), record = RoutingTraceWriter::RecordBytes(3, 2);
  auto error = [](std::string bytes) {
    absl::StatusOr<RoutingTrace> t = RoutingTrace::Parse(std::move(bytes), "t");
    return t.ok() ? std::string("ok") : std::string(t.status().message());
  };
  auto with = [&](size_t at, const void* value, size_t n) {
    std::string bytes = good;
    std::memcpy(bytes.data() + at, value, n);
    return bytes;
  };
  const uint32_t big = 0xffffffffu, zero = 0, two = 2;
  const int16_t rank_three = 3;
  const uint8_t expert_nine = 9;
  const double nan = std::nan("");
  EXPECT_EQ(error(good.substr(0, good.size() - 5)), "ok") << "a partial last record is dropped";
  EXPECT_EQ(RoutingTrace::Parse(good.substr(0, good.size() - 5), "t")->n_records(), 1);
  EXPECT_THAT(error(good.substr(0, 63)), HasSubstr("shorter than the 64-byte header"));
  EXPECT_THAT(error(good.substr(0, header - 1)), HasSubstr("truncated header"));
  EXPECT_THAT(error("X" + good.substr(1)), HasSubstr("no MOETRACE magic"));
  EXPECT_THAT(error(with(8, &two, 4)), HasSubstr("version 2 is not supported"));
  EXPECT_THAT(error(with(20, &zero, 4)), HasSubstr("n_layers is 0"));
  EXPECT_THAT(error(with(20, &big, 4)), HasSubstr("header_bytes is 88, expected"));
  EXPECT_THAT(error(with(24, &big, 4)), HasSubstr("n_experts 4294967295 is not in 1..255"));
  EXPECT_THAT(error(with(28, &big, 4)), HasSubstr("top_k 4294967295"));
  EXPECT_THAT(error(with(16, &two, 4)), HasSubstr("record_bytes is 2, expected 64"));
  EXPECT_THAT(error(with(32, &big, 4)), HasSubstr("n_workers 4294967295 is above 32767"));
  EXPECT_THAT(error(with(40, &nan, 8)), HasSubstr("start time is nan"));
  EXPECT_THAT(error(with(64 + 2, &rank_three, 2)), HasSubstr("layer 0 expert 1 is on rank 3, outside 1..2"));
  EXPECT_THAT(error(with(header + record + 33, &expert_nine, 1)), HasSubstr("record 1: expert id 9 out of range"));
  EXPECT_THAT(error(with(header + 8, &nan, 8)), HasSubstr("record 0: time is not a finite number"));
  EXPECT_FALSE(RoutingTrace::Open("/nonexistent/trace.bin").ok());
}

TEST(RoutingTraceTest, UnwritablePathIsAnError) {
  MixtralConfig c;
  auto writer = RoutingTraceWriter::Open("/nonexistent-dir/trace.bin", c, nullptr);
  EXPECT_FALSE(writer.ok());
  EXPECT_THAT(std::string(writer.status().message()), HasSubstr("/nonexistent-dir/trace.bin"));
}

TEST(LoadRecorderTest, CountsHostedExpertsAndRestartsOnANewEpoch) {
  const ExpertPlacement placement = *ExpertPlacement::Contiguous(2, 4, 2);  // rank 2: e2, e3
  LoadRecorder recorder(2, "host-b", &placement);
  const std::vector<int64_t> rows = {0, 0, 3, 1};
  const std::vector<double> seconds = {0, 0, 0.3, 0.1};
  recorder.OnWorkerStep(WorkerStepRecord{1, 10, 1, rows, seconds, 0.4, 0.01, 0.5, 100, 50});
  WorkerReport r = recorder.NextReport();
  EXPECT_EQ(r.rank, 2);
  EXPECT_EQ(r.host, "host-b");
  EXPECT_EQ(r.sequence, 1u);
  EXPECT_EQ(r.exchanges, 1);
  EXPECT_EQ(r.last_step_id, 10);
  ASSERT_EQ(r.experts.size(), 4u);  // (0,2) (0,3) (1,2) (1,3)
  EXPECT_EQ(r.experts[2].layer, 1);
  EXPECT_EQ(r.experts[2].expert, 2);
  EXPECT_EQ(r.experts[2].tokens, 3);
  EXPECT_DOUBLE_EQ(r.experts[2].busy_seconds, 0.3);
  EXPECT_EQ(r.bytes_in, 100);
  recorder.OnWorkerStep(WorkerStepRecord{2, 11, 0, rows, {}, 0.4, 0.01, 0.5, 100, 50});
  r = recorder.NextReport();
  EXPECT_EQ(r.epoch, 2u);
  EXPECT_EQ(r.sequence, 2u);
  EXPECT_EQ(r.exchanges, 1);
  EXPECT_EQ(r.experts[0].tokens, 3);  // layer 0 expert 2, the only step of epoch 2
  EXPECT_EQ(r.experts[2].tokens, 0);
}

TEST(LoadViewTest, ShowsSharesWorkersAndLostWorkers) {
  moe::v1::LoadSnapshot s;
  s.set_num_experts(2);
  s.set_top_k(1);
  s.set_num_workers(1);
  moe::v1::LayerLoad* l = s.add_layers();
  l->add_expert_tokens(3);
  l->add_expert_tokens(1);
  moe::v1::WorkerLoad* w = s.add_workers();
  w->set_rank(1);
  w->set_seconds_since_report(9);
  w->set_alive(false);
  const std::string view = RenderLoadView(s, {});
  EXPECT_THAT(view, HasSubstr(" 75.0%  25.0%"));
  EXPECT_THAT(view, HasSubstr("LOST 9 s"));
}

TEST(LoadViewTest, ShowsThePlacementWithReplicasAndTheLastReplacement) {
  moe::v1::PlacementInfo p;
  p.set_epoch(3);
  p.set_expert_slots(3);
  p.set_rearrangements(2);
  p.set_failed_rearrangements(1);
  // Layer 0: expert 0 on both workers, 1 on worker 1, 2 on worker 2.
  moe::v1::LayerSlots* layer = p.add_layers();
  for (auto [rank, expert] : {std::pair{1, 0}, {2, 0}, {1, 1}, {2, 2}}) {
    moe::v1::Slot* slot = layer->add_slots();
    slot->set_rank(rank);
    slot->set_expert(expert);
  }
  p.mutable_last()->set_ok(false);
  p.mutable_last()->set_trigger("request");
  p.mutable_last()->set_error("worker rank 2 could not load its new experts: gone");
  const std::string view = RenderPlacement(p, 2, 3);
  EXPECT_THAT(view, HasSubstr("placement epoch 3 | 2 re-placements, 1 failed | 3 slots per worker"));
  EXPECT_THAT(view, HasSubstr("last (request) FAILED, placement kept: worker rank 2 could not load"));
  EXPECT_THAT(view, HasSubstr("    0 | 0*,1           | 0*,2          "));
}

}  // namespace
}  // namespace moe
