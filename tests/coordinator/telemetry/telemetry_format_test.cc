// The pieces that format telemetry: imbalance math, Prometheus text, the worker's load recorder
// and the load view (the routing trace has routing_trace_test.cc).
#include <cstdio>
#include <fstream>
#include <set>
#include <sstream>

#include "absl/strings/str_split.h"
#include "coordinator/client/load_view.h"
#include "coordinator/telemetry/imbalance.h"
#include "coordinator/telemetry/load_metrics.h"
#include "coordinator/telemetry/process_metrics.h"
#include "coordinator/telemetry/prometheus_text.h"
#include "coordinator/telemetry/request_metrics.h"
#include "coordinator/telemetry/server_metrics.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/load_recorder.h"

namespace moe {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

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

TEST(PrometheusTextTest, VllmHistogramSet) {
  RequestMetrics m;
  // Arrived, queued 0.5 ms, first token at 3 ms, last at 10 ms; 40 prompt tokens, 8 generated.
  m.RecordFinished("length", 40, 8, 0.003, 0.010, 0.0005);
  m.RecordInterToken(0.0008);
  m.RecordInterToken(0.002);
  PrometheusText t;
  m.Render(&t);
  const std::string& text = t.text();
  // Buckets from 1 ms: sub-5 ms times are told apart.
  EXPECT_THAT(text, HasSubstr("moe_time_to_first_token_seconds_bucket{le=\"0.001\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("moe_time_to_first_token_seconds_bucket{le=\"0.005\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("moe_request_queue_time_seconds_bucket{le=\"0.001\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("moe_request_prefill_time_seconds_bucket{le=\"0.001\"} 0\n"));
  EXPECT_THAT(text,
              HasSubstr("moe_request_prefill_time_seconds_bucket{le=\"0.0025\"} 1\n"));  // 2.5 ms
  EXPECT_THAT(text, HasSubstr("moe_request_decode_time_seconds_bucket{le=\"0.01\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("moe_request_decode_time_seconds_bucket{le=\"0.005\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("moe_inter_token_latency_seconds_bucket{le=\"0.001\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("moe_inter_token_latency_seconds_count 2\n"));
  EXPECT_THAT(text, HasSubstr("moe_request_prompt_tokens_bucket{le=\"20\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("moe_request_prompt_tokens_bucket{le=\"50\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("moe_request_generation_tokens_bucket{le=\"10\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("moe_request_generation_tokens_sum 8\n"));
  // Without a queue time (unknown), no queue or prefill sample.
  RequestMetrics unknown;
  unknown.RecordFinished("eos", 4, 2, 0.1, 0.2);
  PrometheusText u;
  unknown.Render(&u);
  EXPECT_THAT(u.text(), HasSubstr("moe_request_queue_time_seconds_count 0\n"));
}

TEST(PrometheusTextTest, ProcessMetrics) {
  PrometheusText t;
  RenderProcessMetrics("1.2.3", &t);
  const std::string& text = t.text();
  for (const char* family :
       {"process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds",
        "process_start_time_seconds", "process_max_fds", "process_virtual_memory_bytes"}) {
    EXPECT_THAT(text, HasSubstr(std::string("# TYPE ") + family)) << family;
  }
  EXPECT_THAT(text, HasSubstr("moe_build_info{version=\"1.2.3\"} 1\n"));
  // This test's own resident memory: more than a megabyte, less than a terabyte.
  const size_t at = text.find("\nprocess_resident_memory_bytes ");
  ASSERT_NE(at, std::string::npos);
  const double rss = std::stod(text.substr(at + 31));
  EXPECT_GT(rss, 1e6);
  EXPECT_LT(rss, 1e12);
}

// The whole page: the engine's counters and gauges, the request histograms, the load families only
// when telemetry is on, and the process collector; each family once.
TEST(PrometheusTextTest, ServerPageHasEveryPart) {
  SchedulerStats stats;
  stats.steps = 12;
  stats.tokens = 345;
  stats.split_steps = 2;
  stats.running = 3;
  stats.waiting = 1;
  stats.kv_bytes_used = 4096;
  stats.kv_bytes_budget = 1 << 20;
  RequestMetrics requests;
  requests.RecordFinished("length", 5, 7, 0.01, 0.2);
  const std::string without_load = RenderServerMetrics(stats, requests, nullptr, "9.9");
  for (const char* sample :
       {"moe_steps_total 12\n", "moe_tokens_total 345\n", "moe_overlapped_steps_total 2\n",
        "moe_requests_running 3\n", "moe_requests_waiting 1\n",
        "moe_kv_cache_bytes{state=\"used\"} 4096\n",
        "moe_kv_cache_bytes{state=\"budget\"} 1048576\n", "moe_build_info{version=\"9.9\"} 1\n",
        "# TYPE process_cpu_seconds_total counter\n"}) {
    EXPECT_THAT(without_load, HasSubstr(sample)) << sample;
  }
  EXPECT_THAT(without_load, HasSubstr("moe_request_generation_tokens_sum 7\n"));
  EXPECT_THAT(without_load, Not(HasSubstr("moe_expert_tokens_total")));
  LoadSnapshot load;
  load.num_workers = 1;
  load.layers.emplace_back().expert_tokens = {4, 6};
  load.lifetime.expert_tokens = {{4, 6}};
  load.workers.emplace_back().rank = 1;
  load.lifetime.workers.emplace_back().rank = 1;
  const std::string with_load = RenderServerMetrics(stats, requests, &load, "9.9");
  EXPECT_THAT(with_load, HasSubstr("moe_expert_tokens_total{layer=\"0\",expert=\"1\"} 6\n"));
  std::istringstream lines(with_load);
  std::set<std::string> families;
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("# TYPE ", 0) != 0) continue;
    const std::string family = line.substr(7, line.find(' ', 7) - 7);
    EXPECT_TRUE(families.insert(family).second) << family << " twice";
  }
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
  s.labels.push_back(LabelLoad{"chat", 3, 30, 12, {}});
  s.labels.push_back(LabelLoad{"", 1, 5, 2, {}});
  s.window.steps = 4;
  s.window.straggler_seconds = 0.5;
  s.window.locality.set_overlap_ratio = 0.25;
  // The counters since start: more than since the last reset.
  s.lifetime.expert_tokens = {{100, 101, 102}, {110, 111, 112}};
  s.lifetime.locality_pairs = {7, 7};
  s.lifetime.workers.resize(2);
  s.lifetime.workers[0].rank = 1;
  s.lifetime.workers[1].rank = 2;
  s.lifetime.workers[1].routed_tokens = 99;
  s.lifetime.labels.push_back(LabelLoad{"chat", 4, 40, 20, {}});
  s.lifetime.labels.push_back(LabelLoad{"", 1, 5, 2, {}});
  PrometheusText t;
  RenderLoadMetrics(s, &t);
  EXPECT_THAT(t.text(), HasSubstr("moe_expert_tokens_total{layer=\"1\",expert=\"2\"} 112\n"));
  EXPECT_THAT(t.text(), HasSubstr("moe_expert_window_tokens{layer=\"1\",expert=\"2\"} 2\n"));
  EXPECT_THAT(t.text(), HasSubstr("moe_locality_pairs_total{layer=\"1\"} 7\n"));
  EXPECT_THAT(t.text(), HasSubstr("moe_worker_routed_tokens_total{worker=\"2\"} 99\n"));
  EXPECT_THAT(t.text(), HasSubstr("moe_label_requests_total{label=\"chat\"} 4\n"));
  EXPECT_THAT(t.text(), HasSubstr("moe_label_prompt_tokens_total{label=\"chat\"} 40\n"));
  EXPECT_THAT(t.text(), HasSubstr("moe_label_generated_tokens_total{label=\"\"} 2\n"));
  EXPECT_THAT(t.text(), HasSubstr("moe_window_steps 4\n"));
  EXPECT_THAT(t.text(), HasSubstr("moe_window_straggler_seconds 0.5\n"));
  EXPECT_THAT(t.text(), HasSubstr("moe_window_locality_ratio{kind=\"set_overlap\"} 0.25\n"));
  EXPECT_THAT(t.text(), HasSubstr("moe_balancedness{scope=\"workers_window\",layer=\"all\"}"));
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
  moe::v1::LabelLoad* label = s.add_labels();
  label->set_label("chat");
  label->set_requests(3);
  label->set_generated_tokens(12);
  s.add_labels()->set_requests(1);
  s.mutable_window()->set_steps(7);
  s.mutable_window()->set_straggler_seconds(0.002);
  const std::string view = RenderLoadView(s, {});
  EXPECT_THAT(view, HasSubstr(" 75.0%  25.0%"));
  EXPECT_THAT(view, HasSubstr("LOST 9 s"));
  EXPECT_THAT(view, HasSubstr("chat                         3        0         12\n"));
  EXPECT_THAT(view, HasSubstr("(none)                       1"));
  EXPECT_THAT(view, Not(HasSubstr("in the window")));
  EXPECT_THAT(
      RenderLoadView(s, LoadViewOptions{true, 200}),
      HasSubstr("in the window: 7 steps, 0 tokens, sets overlap      -, workers balancedness -, "
                "straggler cost 2.0 ms"));
}

// An idle server has no balance to show: "-", not the 1.00 (or 0.00) of an empty division.
TEST(LoadViewTest, ShowsADashWhereThereIsNoData) {
  moe::v1::LoadSnapshot s;
  s.set_num_experts(2);
  s.set_top_k(1);
  s.set_num_workers(2);
  moe::v1::LayerLoad* l = s.add_layers();
  l->add_expert_tokens(0);
  l->add_expert_tokens(0);
  l->add_worker_tokens(0);
  l->add_worker_tokens(0);
  l->mutable_expert_imbalance()->set_balancedness(1.0);
  l->mutable_worker_imbalance()->set_balancedness(1.0);
  s.mutable_expert_imbalance()->set_balancedness(1.0);
  const std::string view = RenderLoadView(s, {});
  EXPECT_THAT(view, HasSubstr("|    -     -     - |      -       - |     -     0.0 ms"));
  EXPECT_THAT(view,
              HasSubstr("all experts (since reset): balancedness -, imbalance ratio -%, CV -"));
  EXPECT_THAT(view, Not(HasSubstr("1.00")));
}

// Mixtral's shape (32 layers, 8 experts) on 6 workers with everything shown: every line fits 80
// columns (and 60); a wide terminal gets each table whole.
TEST(LoadViewTest, FitsTheWidth) {
  moe::v1::LoadSnapshot s;
  s.set_num_experts(8);
  s.set_top_k(2);
  s.set_num_workers(6);
  s.set_tokens(123456);
  for (int layer = 0; layer < 32; ++layer) {
    moe::v1::LayerLoad* l = s.add_layers();
    l->set_layer(layer);
    for (int e = 0; e < 8; ++e) l->add_expert_tokens(1000 * (e + 1) + layer);
    for (int w = 0; w < 6; ++w) l->add_worker_tokens(500 + w);
    l->mutable_locality()->set_pairs(10);
  }
  s.mutable_placement()->set_epoch(2);
  for (int layer = 0; layer < 32; ++layer) {
    moe::v1::LayerSlots* slots = s.mutable_placement()->add_layers();
    for (int e = 0; e < 8; ++e) {
      moe::v1::Slot* slot = slots->add_slots();
      slot->set_rank(1 + e % 6);
      slot->set_expert(e);
    }
  }
  s.mutable_placement()->mutable_last()->set_ok(true);
  s.mutable_placement()->mutable_last()->set_trigger("periodic");
  for (int w = 1; w <= 6; ++w) {
    moe::v1::WorkerLoad* worker = s.add_workers();
    worker->set_rank(w);
    worker->set_host("node-with-a-long-hostname.example.org");
    worker->set_routed_tokens(1000 * w);
    worker->set_seconds_since_report(0.3);
    worker->set_alive(true);
  }
  s.add_labels()->set_label("eval:gsm8k");
  for (int width : {80, 60}) {
    const std::string view = RenderLoadView(s, LoadViewOptions{true, width});
    for (absl::string_view line : absl::StrSplit(view, '\n')) {
      EXPECT_LE(static_cast<int>(line.size()), width)
          << "at width " << width << ": \"" << line << "\"";
    }
    EXPECT_THAT(view,
                HasSubstr("worker  compute s"));  // the workers' times in a table of their own
  }
  const std::string narrow = RenderLoadView(s, LoadViewOptions{false, 80});
  EXPECT_THAT(
      narrow,
      HasSubstr("layer  tokens     e0     e1     e2     e3     e4     e5     e6     e7 \n"));
  EXPECT_THAT(narrow,
              HasSubstr("\nlayer | bal   imb%   cv  | 1st-rep overlap | w-bal straggler\n"));
  EXPECT_THAT(
      narrow,
      HasSubstr("layer | worker 5       | worker 6      \n"));  // workers 5-6 in a second group
  const std::string wide = RenderLoadView(s, LoadViewOptions{false, 200});
  EXPECT_THAT(wide, HasSubstr("e7 | bal   imb%   cv  | 1st-rep overlap | w-bal straggler\n"));
  EXPECT_THAT(wide, HasSubstr("share  compute s   wait s   idle s    MB in   MB out  report\n"));
  EXPECT_THAT(wide, Not(HasSubstr("\nworker  compute s")));
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
  EXPECT_THAT(view,
              HasSubstr("placement epoch 3 | 2 re-placements, 1 failed | 3 slots per worker"));
  EXPECT_THAT(view,
              HasSubstr("last (request) FAILED, placement kept: worker rank 2 could not load"));
  EXPECT_THAT(view, HasSubstr("    0 | 0*,1           | 0*,2          "));
}

}  // namespace
}  // namespace moe
