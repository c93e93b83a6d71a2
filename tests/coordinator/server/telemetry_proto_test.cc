// The telemetry structs and their moe.v1 messages: every field crosses the wire, under its own
// name, with its value. The worker's report goes out through worker/telemetry_reporter.h and comes
// back through coordinator/server/telemetry_proto.h, as it does in the cluster.
#include "coordinator/server/telemetry_proto.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "worker/telemetry_reporter.h"

namespace moe {
namespace {

using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

// Every field of `message` and of the messages inside it is set to a value of its own (counting
// up from *next), repeated fields get two elements: a message no field of which is left default.
void FillEveryField(Message* message, int* next) {
  const Reflection* r = message->GetReflection();
  for (int i = 0; i < message->GetDescriptor()->field_count(); ++i) {
    const FieldDescriptor* f = message->GetDescriptor()->field(i);
    for (int n = 0; n < (f->is_repeated() ? 2 : 1); ++n) {
      const int v = (*next)++;
      switch (f->cpp_type()) {
        case FieldDescriptor::CPPTYPE_INT32:
          f->is_repeated() ? r->AddInt32(message, f, v) : r->SetInt32(message, f, v);
          break;
        case FieldDescriptor::CPPTYPE_INT64:
          f->is_repeated() ? r->AddInt64(message, f, v) : r->SetInt64(message, f, v);
          break;
        case FieldDescriptor::CPPTYPE_UINT32:
          f->is_repeated() ? r->AddUInt32(message, f, v) : r->SetUInt32(message, f, v);
          break;
        case FieldDescriptor::CPPTYPE_UINT64:
          f->is_repeated() ? r->AddUInt64(message, f, v) : r->SetUInt64(message, f, v);
          break;
        case FieldDescriptor::CPPTYPE_DOUBLE:
          f->is_repeated() ? r->AddDouble(message, f, v + 0.25)
                           : r->SetDouble(message, f, v + 0.25);
          break;
        case FieldDescriptor::CPPTYPE_BOOL:
          f->is_repeated() ? r->AddBool(message, f, true) : r->SetBool(message, f, true);
          break;
        case FieldDescriptor::CPPTYPE_STRING:
          f->is_repeated() ? r->AddString(message, f, "s" + std::to_string(v))
                           : r->SetString(message, f, "s" + std::to_string(v));
          break;
        case FieldDescriptor::CPPTYPE_MESSAGE:
          FillEveryField(
              f->is_repeated() ? r->AddMessage(message, f) : r->MutableMessage(message, f), next);
          break;
        default:
          FAIL() << "no filler for the type of " << f->full_name();
      }
    }
  }
}

// Fails for each field of `message` (and of the messages inside it) left at its default: a field
// the converter forgot.
void ExpectEveryFieldSet(const Message& message) {
  const Reflection* r = message.GetReflection();
  for (int i = 0; i < message.GetDescriptor()->field_count(); ++i) {
    const FieldDescriptor* f = message.GetDescriptor()->field(i);
    if (f->is_repeated()) {
      EXPECT_GT(r->FieldSize(message, f), 0) << f->full_name() << " is empty";
      for (int n = 0;
           f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE && n < r->FieldSize(message, f); ++n) {
        ExpectEveryFieldSet(r->GetRepeatedMessage(message, f, n));
      }
    } else {
      EXPECT_TRUE(r->HasField(message, f)) << f->full_name() << " is left default";
      if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE)
        ExpectEveryFieldSet(r->GetMessage(message, f));
    }
  }
}

void ExpectSameExperts(const std::vector<ExpertLoad>& a,
                       const google::protobuf::RepeatedPtrField<moe::v1::ExpertLoad>& b) {
  ASSERT_EQ(a.size(), static_cast<size_t>(b.size()));
  for (size_t i = 0; i < a.size(); ++i) {
    const moe::v1::ExpertLoad& p = b[static_cast<int>(i)];
    EXPECT_EQ(a[i].layer, p.layer()) << i;
    EXPECT_EQ(a[i].expert, p.expert()) << i;
    EXPECT_EQ(a[i].tokens, p.tokens()) << i;
    EXPECT_EQ(a[i].busy_seconds, p.busy_seconds()) << i;
  }
}

void ExpectSameReport(const WorkerReport& a, const moe::v1::WorkerReport& b) {
  EXPECT_EQ(a.rank, b.rank());
  EXPECT_EQ(a.epoch, b.epoch());
  EXPECT_EQ(a.sequence, b.sequence());
  EXPECT_EQ(a.host, b.host());
  EXPECT_EQ(a.exchanges, b.exchanges());
  EXPECT_EQ(a.last_step_id, b.last_step_id());
  EXPECT_EQ(a.compute_seconds, b.compute_seconds());
  EXPECT_EQ(a.exchange_wait_seconds, b.exchange_wait_seconds());
  EXPECT_EQ(a.idle_seconds, b.idle_seconds());
  EXPECT_EQ(a.bytes_in, b.bytes_in());
  EXPECT_EQ(a.bytes_out, b.bytes_out());
  ExpectSameExperts(a.experts, b.experts());
}

void ExpectSameImbalance(const LoadImbalance& a, const moe::v1::Imbalance& b) {
  EXPECT_EQ(a.mean, b.mean());
  EXPECT_EQ(a.max, b.max());
  EXPECT_EQ(a.balancedness, b.balancedness());
  EXPECT_EQ(a.imbalance_ratio, b.imbalance_ratio());
  EXPECT_EQ(a.cv, b.cv());
}

void ExpectSameLocality(const RoutingLocality& a, const moe::v1::Locality& b) {
  EXPECT_EQ(a.pairs, b.pairs());
  EXPECT_EQ(a.first_choice_repeats, b.first_choice_repeats());
  EXPECT_EQ(a.set_overlaps, b.set_overlaps());
  EXPECT_EQ(a.first_choice_repeat_ratio, b.first_choice_repeat_ratio());
  EXPECT_EQ(a.set_overlap_ratio, b.set_overlap_ratio());
  EXPECT_EQ(a.chance_first_choice, b.chance_first_choice());
  EXPECT_EQ(a.chance_set_overlap, b.chance_set_overlap());
}

// Distinct values in every field, so a field copied into its neighbour shows.
struct Counter {
  int next = 1;
  int Int() { return next++; }
  double Seconds() { return next++ + 0.5; }
};

ExpertLoad SomeExpertLoad(Counter* c) {
  return ExpertLoad{c->Int(), c->Int(), c->Int(), c->Seconds()};
}

WorkerReport SomeReport(Counter* c) {
  WorkerReport r;
  r.rank = c->Int();
  r.epoch = static_cast<uint32_t>(c->Int());
  r.sequence = uint64_t{1} << 40;  // beyond 32 bits: the wire type is uint64
  r.host = "worker-host-7";
  r.exchanges = int64_t{1} << 45;
  r.last_step_id = c->Int();
  r.compute_seconds = c->Seconds();
  r.exchange_wait_seconds = c->Seconds();
  r.idle_seconds = c->Seconds();
  r.bytes_in = c->Int();
  r.bytes_out = c->Int();
  for (int i = 0; i < 3; ++i) r.experts.push_back(SomeExpertLoad(c));
  r.placement_epoch = static_cast<uint32_t>(c->Int());
  return r;
}

LoadImbalance SomeImbalance(Counter* c) {
  return LoadImbalance{c->Seconds(), c->Seconds(), c->Seconds(), c->Seconds(), c->Seconds()};
}

RoutingLocality SomeLocality(Counter* c) {
  return RoutingLocality{c->Int(),     c->Int(),     c->Int(),    c->Seconds(),
                         c->Seconds(), c->Seconds(), c->Seconds()};
}

LoadSnapshot SomeSnapshot(Counter* c) {
  LoadSnapshot s;
  s.epoch = static_cast<uint32_t>(c->Int());
  s.uptime_seconds = c->Seconds();
  s.seconds_since_reset = c->Seconds();
  s.window_seconds = c->Seconds();
  s.num_layers = c->Int();
  s.num_experts = c->Int();
  s.top_k = c->Int();
  s.num_workers = c->Int();
  s.steps = c->Int();
  s.tokens = c->Int();
  for (int l = 0; l < 2; ++l) {
    LayerLoad layer;
    layer.layer = c->Int();
    layer.expert_tokens = {c->Int(), c->Int(), c->Int()};
    layer.expert_window_tokens = {c->Int(), c->Int(), c->Int()};
    layer.worker_tokens = {c->Int(), c->Int()};
    layer.expert_imbalance = SomeImbalance(c);
    layer.expert_window_imbalance = SomeImbalance(c);
    layer.worker_imbalance = SomeImbalance(c);
    layer.locality = SomeLocality(c);
    layer.straggler_seconds = c->Seconds();
    s.layers.push_back(layer);
  }
  s.expert_imbalance = SomeImbalance(c);
  s.worker_imbalance = SomeImbalance(c);
  s.locality = SomeLocality(c);
  for (int r = 0; r < 2; ++r) {
    WorkerLoad w;
    w.rank = c->Int();
    w.routed_tokens = c->Int();
    w.alive = true;  // false is the default, which would not show a field left out
    w.seconds_since_report = c->Seconds();
    w.reports = c->Int();
    w.host = "host-" + std::to_string(c->Int());
    w.reported_tokens = c->Int();
    w.exchanges = c->Int();
    w.compute_seconds = c->Seconds();
    w.exchange_wait_seconds = c->Seconds();
    w.idle_seconds = c->Seconds();
    w.bytes_in = c->Int();
    w.bytes_out = c->Int();
    w.experts = {SomeExpertLoad(c), SomeExpertLoad(c)};
    w.placement_epoch = static_cast<uint32_t>(c->Int());
    s.workers.push_back(w);
  }
  s.straggler_seconds = c->Seconds();
  s.exchange_seconds = c->Seconds();
  s.exchanges = c->Int();
  PlacementInfo& p = s.placement;
  p.epoch = static_cast<uint32_t>(c->Int());
  p.expert_slots = c->Int();
  p.slots = {{{c->Int(), c->Int()}, {c->Int(), c->Int()}}, {{c->Int(), c->Int()}}};
  p.rearrangements = c->Int();
  p.failed_rearrangements = c->Int();
  p.in_progress = true;
  p.has_last = true;
  Rearrangement& r = p.last;
  r.ok = true;
  r.error = "error-" + std::to_string(c->Int());
  r.trigger = "trigger-" + std::to_string(c->Int());
  r.epoch = static_cast<uint32_t>(c->Int());
  r.balancedness_before = c->Seconds();
  r.planned_from_balancedness = c->Seconds();
  r.predicted_balancedness = c->Seconds();
  r.moved_slots = c->Int();
  r.experts_loaded = c->Int();
  r.load_seconds = c->Seconds();
  r.switch_seconds = c->Seconds();
  r.total_seconds = c->Seconds();
  for (int i = 0; i < 2; ++i) {
    LabelLoad label;
    label.label = "label-" + std::to_string(c->Int());
    label.requests = c->Int();
    label.prompt_tokens = c->Int();
    label.generated_tokens = c->Int();
    label.expert_tokens = {c->Int(), c->Int(), c->Int()};
    s.labels.push_back(label);
  }
  WindowLoad& w = s.window;
  w.steps = c->Int();
  w.tokens = c->Int();
  w.locality = SomeLocality(c);
  w.worker_imbalance = SomeImbalance(c);
  w.straggler_seconds = c->Seconds();
  w.exchange_seconds = c->Seconds();
  w.exchanges = c->Int();
  return s;
}

TEST(TelemetryProtoTest, WorkerReportSurvivesWorkerToCoordinator) {
  Counter c;
  const WorkerReport sent = SomeReport(&c);
  const moe::v1::WorkerReport wire = WorkerReportToProto(sent);
  ExpectEveryFieldSet(wire);
  ExpectSameReport(sent, wire);
  const WorkerReport received = WorkerReportFromProto(wire);
  ExpectSameReport(received, wire);  // so received == sent, field by field
}

TEST(TelemetryProtoTest, EveryWireFieldOfAReportReachesTheStruct) {
  // Starting from the wire: a field of moe.v1.WorkerReport (or ExpertLoad) that the converters
  // do not carry comes back default, and the messages differ.
  moe::v1::WorkerReport wire;
  int next = 1;
  FillEveryField(&wire, &next);
  const moe::v1::WorkerReport again = WorkerReportToProto(WorkerReportFromProto(wire));
  EXPECT_EQ(again.SerializeAsString(), wire.SerializeAsString()) << again.DebugString() << "\nvs\n"
                                                                 << wire.DebugString();
}

TEST(TelemetryProtoTest, SnapshotCarriesEveryFieldUnderItsName) {
  Counter c;
  const LoadSnapshot s = SomeSnapshot(&c);
  const moe::v1::LoadSnapshot p = LoadSnapshotToProto(s);
  ExpectEveryFieldSet(p);
  EXPECT_EQ(s.epoch, p.epoch());
  EXPECT_EQ(s.uptime_seconds, p.uptime_seconds());
  EXPECT_EQ(s.seconds_since_reset, p.seconds_since_reset());
  EXPECT_EQ(s.window_seconds, p.window_seconds());
  EXPECT_EQ(s.num_layers, p.num_layers());
  EXPECT_EQ(s.num_experts, p.num_experts());
  EXPECT_EQ(s.top_k, p.top_k());
  EXPECT_EQ(s.num_workers, p.num_workers());
  EXPECT_EQ(s.steps, p.steps());
  EXPECT_EQ(s.tokens, p.tokens());
  ASSERT_EQ(s.layers.size(), static_cast<size_t>(p.layers_size()));
  for (size_t i = 0; i < s.layers.size(); ++i) {
    SCOPED_TRACE(i);
    const LayerLoad& a = s.layers[i];
    const moe::v1::LayerLoad& b = p.layers(static_cast<int>(i));
    EXPECT_EQ(a.layer, b.layer());
    EXPECT_EQ(a.expert_tokens,
              std::vector<int64_t>(b.expert_tokens().begin(), b.expert_tokens().end()));
    EXPECT_EQ(a.expert_window_tokens, std::vector<int64_t>(b.expert_window_tokens().begin(),
                                                           b.expert_window_tokens().end()));
    EXPECT_EQ(a.worker_tokens,
              std::vector<int64_t>(b.worker_tokens().begin(), b.worker_tokens().end()));
    ExpectSameImbalance(a.expert_imbalance, b.expert_imbalance());
    ExpectSameImbalance(a.expert_window_imbalance, b.expert_window_imbalance());
    ExpectSameImbalance(a.worker_imbalance, b.worker_imbalance());
    ExpectSameLocality(a.locality, b.locality());
    EXPECT_EQ(a.straggler_seconds, b.straggler_seconds());
  }
  ExpectSameImbalance(s.expert_imbalance, p.expert_imbalance());
  ExpectSameImbalance(s.worker_imbalance, p.worker_imbalance());
  ExpectSameLocality(s.locality, p.locality());
  ASSERT_EQ(s.workers.size(), static_cast<size_t>(p.workers_size()));
  for (size_t i = 0; i < s.workers.size(); ++i) {
    SCOPED_TRACE(i);
    const WorkerLoad& a = s.workers[i];
    const moe::v1::WorkerLoad& b = p.workers(static_cast<int>(i));
    EXPECT_EQ(a.rank, b.rank());
    EXPECT_EQ(a.routed_tokens, b.routed_tokens());
    EXPECT_EQ(a.alive, b.alive());
    EXPECT_EQ(a.seconds_since_report, b.seconds_since_report());
    EXPECT_EQ(a.reports, b.reports());
    EXPECT_EQ(a.host, b.host());
    EXPECT_EQ(a.reported_tokens, b.reported_tokens());
    EXPECT_EQ(a.exchanges, b.exchanges());
    EXPECT_EQ(a.compute_seconds, b.compute_seconds());
    EXPECT_EQ(a.exchange_wait_seconds, b.exchange_wait_seconds());
    EXPECT_EQ(a.idle_seconds, b.idle_seconds());
    EXPECT_EQ(a.bytes_in, b.bytes_in());
    EXPECT_EQ(a.bytes_out, b.bytes_out());
    ExpectSameExperts(a.experts, b.experts());
    EXPECT_EQ(a.placement_epoch, b.placement_epoch());
  }
  EXPECT_EQ(s.straggler_seconds, p.straggler_seconds());
  EXPECT_EQ(s.exchange_seconds, p.exchange_seconds());
  EXPECT_EQ(s.exchanges, p.exchanges());
  const PlacementInfo& a = s.placement;
  const moe::v1::PlacementInfo& b = p.placement();
  EXPECT_EQ(a.epoch, b.epoch());
  EXPECT_EQ(a.expert_slots, b.expert_slots());
  ASSERT_EQ(a.slots.size(), static_cast<size_t>(b.layers_size()));
  for (size_t l = 0; l < a.slots.size(); ++l) {
    ASSERT_EQ(a.slots[l].size(), static_cast<size_t>(b.layers(static_cast<int>(l)).slots_size()));
    for (size_t i = 0; i < a.slots[l].size(); ++i) {
      const moe::v1::Slot& slot = b.layers(static_cast<int>(l)).slots(static_cast<int>(i));
      EXPECT_EQ(a.slots[l][i].rank, slot.rank());
      EXPECT_EQ(a.slots[l][i].expert, slot.expert());
    }
  }
  EXPECT_EQ(a.rearrangements, b.rearrangements());
  EXPECT_EQ(a.failed_rearrangements, b.failed_rearrangements());
  EXPECT_EQ(a.in_progress, b.in_progress());
  const moe::v1::Rearrangement& r = b.last();
  EXPECT_EQ(a.last.ok, r.ok());
  EXPECT_EQ(a.last.error, r.error());
  EXPECT_EQ(a.last.trigger, r.trigger());
  EXPECT_EQ(a.last.epoch, r.epoch());
  EXPECT_EQ(a.last.balancedness_before, r.balancedness_before());
  EXPECT_EQ(a.last.planned_from_balancedness, r.planned_from_balancedness());
  EXPECT_EQ(a.last.predicted_balancedness, r.predicted_balancedness());
  EXPECT_EQ(a.last.moved_slots, r.moved_slots());
  EXPECT_EQ(a.last.experts_loaded, r.experts_loaded());
  EXPECT_EQ(a.last.load_seconds, r.load_seconds());
  EXPECT_EQ(a.last.switch_seconds, r.switch_seconds());
  EXPECT_EQ(a.last.total_seconds, r.total_seconds());
  ASSERT_EQ(s.labels.size(), static_cast<size_t>(p.labels_size()));
  for (size_t i = 0; i < s.labels.size(); ++i) {
    const LabelLoad& x = s.labels[i];
    const moe::v1::LabelLoad& y = p.labels(static_cast<int>(i));
    EXPECT_EQ(x.label, y.label());
    EXPECT_EQ(x.requests, y.requests());
    EXPECT_EQ(x.prompt_tokens, y.prompt_tokens());
    EXPECT_EQ(x.generated_tokens, y.generated_tokens());
    EXPECT_EQ(x.expert_tokens,
              std::vector<int64_t>(y.expert_tokens().begin(), y.expert_tokens().end()));
  }
  const WindowLoad& w = s.window;
  EXPECT_EQ(w.steps, p.window().steps());
  EXPECT_EQ(w.tokens, p.window().tokens());
  ExpectSameLocality(w.locality, p.window().locality());
  ExpectSameImbalance(w.worker_imbalance, p.window().worker_imbalance());
  EXPECT_EQ(w.straggler_seconds, p.window().straggler_seconds());
  EXPECT_EQ(w.exchange_seconds, p.window().exchange_seconds());
  EXPECT_EQ(w.exchanges, p.window().exchanges());
}

}  // namespace
}  // namespace moe
