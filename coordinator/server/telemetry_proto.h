// The coordinator's side of the telemetry wire format: its plain structs
// (core/exchange/load_telemetry.h) to and from the moe.v1 messages. Only the gRPC services call
// these; the worker's side of the report lives in worker/telemetry_reporter.h.
#pragma once

#include "core/exchange/load_telemetry.h"
#include "moe/v1/telemetry.pb.h"

namespace moe {

// What GetLoad and WatchLoad send: every field of the snapshot, one for one.
moe::v1::LoadSnapshot LoadSnapshotToProto(const LoadSnapshot& snapshot);

// Pieces the Rebalance response shares with the snapshot.
void SlotsToProto(const std::vector<ExpertSlot>& slots, moe::v1::LayerSlots* out);
void RearrangementToProto(const Rearrangement& in, moe::v1::Rearrangement* out);

// A worker's report as it arrived, every field one for one. Nothing is checked here:
// LoadAggregator::OnWorkerReport decides what a worker may claim.
WorkerReport WorkerReportFromProto(const moe::v1::WorkerReport& report);

}  // namespace moe
