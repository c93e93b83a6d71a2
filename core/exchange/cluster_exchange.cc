#include "core/exchange/cluster_exchange.h"

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "core/base/status_macros.h"
#include "core/exchange/cluster_protocol.h"

namespace moe {
namespace {

using Clock = std::chrono::steady_clock;
using protocol::CheckMessageSize;
using protocol::kCoordinator;
using protocol::kCountsTag;
using protocol::kHeaderTag;
using protocol::kIdsTag;
using protocol::kReplyTag;

}  // namespace

ClusterExchange::ClusterExchange(PlacementRegistry* placements, Messenger* messenger,
                                 DataPlane* data, kernels::Backend* backend,
                                 ClusterExchangeOptions options)
    : placements_(placements),
      messenger_(messenger),
      data_(data),
      backend_(backend),
      options_(options) {
  const size_t ranks = static_cast<size_t>(placement().n_workers()) + 1;
  for (Flight& f : flights_) {
    f.send_ids.resize(ranks);
    f.send_counts.resize(ranks);
    f.replies.resize(ranks);
    f.headers.resize(ranks);
  }
  command_headers_.resize(ranks);
  command_acks_.resize(ranks);
  stats_.worker_compute_seconds.assign(ranks, 0.0);
  stats_.worker_rows.assign(ranks, 0);
  // Whether a group of transfers can stay in flight beside another: ask the plane once.
  if (std::unique_ptr<DataPlane::InFlight> probe = data_->Detach(); probe != nullptr) {
    can_overlap_ = probe->Wait(1.0, "an empty group", nullptr).ok();
  }
}

absl::Status ClusterExchange::Dispatch(const ExpertLayout& layout, const float* rows, float* out) {
  MOE_RETURN_IF_ERROR(ValidateLayout(layout, placement()));
  if (backend_ == nullptr || data_->Reads(*backend_)) return Exchange(layout, rows, out);
  if (data_->device_memory()) {
    return absl::FailedPreconditionError(absl::StrCat("the exchange's data plane (",
                                                      data_->Describe(), ") cannot read ",
                                                      backend_->Describe(), " memory"));
  }
  // Device rows on a host plane: through host buffers and back, here rather than in the forward
  // pass, so the caller never knows.
  Flight& f = flights_[0];
  const size_t n = static_cast<size_t>(layout.n_rows() * layout.hidden);
  f.host_rows.resize(n);
  f.host_out.resize(n);
  backend_->ToHost(f.host_rows.data(), rows, n * sizeof(float));
  MOE_RETURN_IF_ERROR(backend_->Sync());
  MOE_RETURN_IF_ERROR(Exchange(layout, f.host_rows.data(), f.host_out.data()));
  backend_->ToDevice(out, f.host_out.data(), n * sizeof(float));
  return backend_->Sync();
}

absl::Status ClusterExchange::Prepare(const ExpertLayout& layout, int micro_batch, Flight* f) {
  const int n_workers = placement().n_workers();
  const int n_slots = layout.n_slots();
  const int64_t hidden = layout.hidden;
  const std::vector<ExpertSlot>& slots = placement().slots(layout.layer);
  // A signal stops the run between exchanges, never inside one: workers are then idle and the
  // shutdown that follows reaches them.
  if (options_.stop_requested != nullptr && options_.stop_requested->load()) {
    return absl::CancelledError("stopped by a signal");
  }
  // Each worker's share: its rows per slot and their slot ids, in slot order.
  for (int r = 1; r <= n_workers; ++r) {
    f->send_counts[r].assign(static_cast<size_t>(n_slots), 0);
    f->send_ids[r].clear();
  }
  for (int s = 0; s < n_slots; ++s) {
    const int64_t count = layout.rows_of(s);
    if (count == 0) continue;
    const int r = slots[s].rank;
    f->send_counts[r][s] = count;
    f->send_ids[r].insert(f->send_ids[r].end(), static_cast<size_t>(count), s);
    MOE_RETURN_IF_ERROR(CheckMessageSize(count * hidden, "one slot's rows"));
  }
  // Every check before the first send: once requests are posted, the only ways out are success or
  // aborting the job (a half-posted step cannot be taken back).
  for (int r = 1; r <= n_workers; ++r) {
    MOE_RETURN_IF_ERROR(CheckMessageSize(static_cast<int64_t>(f->send_ids[r].size()) * hidden,
                                         "a dispatch to one worker"));
  }
  f->layout = &layout;
  f->micro_batch = micro_batch;
  f->step_id = ++step_id_;
  f->start = Clock::now();
  f->what = absl::StrCat("layer ", layout.layer, " exchange (step ", f->step_id, ")");
  const uint32_t epoch = options_.telemetry_epoch != nullptr ? options_.telemetry_epoch->load() : 0;
  for (int r = 1; r <= n_workers; ++r) {
    f->headers[r] = StepHeader{
        kStepMagic,
        static_cast<int32_t>(StepCommand::kForward),
        f->step_id,
        layout.layer,
        n_slots,
        static_cast<int64_t>(f->send_ids[r].size()),
        hidden,
        epoch,
        static_cast<uint32_t>(std::clamp(options_.worker_timeout_seconds, 0.0, 4e6) * 1e3),
        0,
        static_cast<uint32_t>(micro_batch)};
  }
  return absl::OkStatus();
}

void ClusterExchange::PostControl(Flight* f) {
  const int n_slots = f->layout->n_slots();
  const int64_t hidden = f->layout->hidden;
  for (int r = 1; r <= placement().n_workers(); ++r) {
    const int64_t n = static_cast<int64_t>(f->send_ids[r].size());
    messenger_->Send(&f->headers[r], sizeof(StepHeader), Element::kByte, r, kHeaderTag);
    messenger_->Send(f->send_counts[r].data(), n_slots, Element::kInt64, r, kCountsTag);
    if (n > 0) messenger_->Send(f->send_ids[r].data(), n, Element::kInt32, r, kIdsTag);
    stats_.bytes_sent += n * (hidden * 4 + 4);
    stats_.bytes_received += n * hidden * 4;
  }
  f->control = messenger_->Take();
  for (int r = 1; r <= placement().n_workers(); ++r) {
    messenger_->Recv(&f->replies[r], sizeof(ReplyHeader), Element::kByte, r, kReplyTag);
  }
  f->replies_in = messenger_->Take();
}

absl::Status ClusterExchange::Finish(Flight* f) {
  const int n_workers = placement().n_workers();
  const ExpertLayout& layout = *f->layout;
  double slowest = 0;
  step_compute_.assign(static_cast<size_t>(n_workers) + 1, 0.0);
  step_rows_.assign(static_cast<size_t>(n_workers) + 1, 0);
  for (int r = 1; r <= n_workers; ++r) {
    const ReplyHeader& reply = f->replies[r];
    const int64_t n = static_cast<int64_t>(f->send_ids[r].size());
    if (reply.magic != kReplyMagic || reply.step_id != f->step_id || reply.layer != layout.layer ||
        reply.n_rows != n) {
      return absl::InternalError(
          absl::StrCat("worker rank ", r, " answered step ", reply.step_id, " layer ", reply.layer,
                       " with ", reply.n_rows, " rows; expected step ", f->step_id, " layer ",
                       layout.layer, " with ", n, " rows (protocol mismatch)"));
    }
    slowest = std::max(slowest, reply.compute_seconds);
    stats_.worker_compute_seconds[r] += reply.compute_seconds;
    stats_.worker_rows[r] += n;
    step_compute_[r] = reply.compute_seconds;
    step_rows_[r] = n;
  }
  ++stats_.exchanges;
  stats_.slowest_compute_seconds += slowest;
  const double wall = std::chrono::duration<double>(Clock::now() - f->start).count();
  stats_.wall_seconds += wall;
  if (options_.observer != nullptr) {
    options_.observer->OnExchange(ExchangeRecord{layout.layer, wall, step_compute_, step_rows_});
  }
  return absl::OkStatus();
}

absl::Status ClusterExchange::Exchange(const ExpertLayout& layout, const float* rows, float* out) {
  Flight* f = &flights_[0];
  MOE_RETURN_IF_ERROR(Prepare(layout, /*micro_batch=*/0, f));
  PostControl(f);
  const int n_slots = layout.n_slots();
  const int64_t hidden = layout.hidden;
  const std::vector<ExpertSlot>& slots = placement().slots(layout.layer);
  const double timeout = options_.worker_timeout_seconds;
  // The layout first: a worker posts its side of the rows' transfers once it knows the counts
  // (NCCL's transfers must meet in order; MPI would not mind).
  MOE_RETURN_IF_ERROR(f->control->Wait(f->what, limits()));
  for (int s = 0; s < n_slots; ++s) {
    const int64_t count = layout.rows_of(s);
    if (count > 0)
      data_->Send(rows + layout.slot_offsets[s] * hidden, count * hidden, slots[s].rank);
  }
  MOE_RETURN_IF_ERROR(data_->Flush(timeout, f->what + " dispatch", options_.liveness));
  // Outputs land in place, slot by slot.
  for (int s = 0; s < n_slots; ++s) {
    const int64_t count = layout.rows_of(s);
    if (count > 0)
      data_->Recv(out + layout.slot_offsets[s] * hidden, count * hidden, slots[s].rank);
  }
  MOE_RETURN_IF_ERROR(data_->Flush(timeout, f->what + " combine", options_.liveness));
  MOE_RETURN_IF_ERROR(f->replies_in->Wait(f->what, limits()));
  return Finish(f);
}

absl::Status ClusterExchange::Post(const ExpertLayout& layout, const float* rows, float* out,
                                   int micro_batch) {
  if (micro_batch < 0 || micro_batch >= kMaxInFlight || flights_[micro_batch].posted) {
    return absl::InternalError(
        absl::StrCat("micro-batch ", micro_batch, " posted twice or out of range"));
  }
  if (!can_overlap_) return Dispatch(layout, rows, out);
  MOE_RETURN_IF_ERROR(ValidateLayout(layout, placement()));
  Flight* f = &flights_[micro_batch];
  const size_t elements = static_cast<size_t>(layout.n_rows() * layout.hidden);
  f->device_out = nullptr;
  if (backend_ != nullptr && !data_->Reads(*backend_)) {  // device rows, staged through the host
    f->host_rows.resize(elements);
    f->host_out.resize(elements);
    backend_->ToHost(f->host_rows.data(), rows, elements * sizeof(float));
    MOE_RETURN_IF_ERROR(backend_->Sync());
    rows = f->host_rows.data();
    f->device_out = out;
    out = f->host_out.data();
  }
  MOE_RETURN_IF_ERROR(Prepare(layout, micro_batch, f));
  PostControl(f);
  // Everything posted at once: the rows out and the receives of their outputs. The messenger
  // matches a peer's messages in the order sent, and a worker serves steps in the order they come.
  const int64_t hidden = layout.hidden;
  const std::vector<ExpertSlot>& slots = placement().slots(layout.layer);
  for (int s = 0; s < layout.n_slots(); ++s) {
    const int64_t count = layout.rows_of(s);
    if (count > 0)
      data_->Send(rows + layout.slot_offsets[s] * hidden, count * hidden, slots[s].rank);
  }
  for (int s = 0; s < layout.n_slots(); ++s) {
    const int64_t count = layout.rows_of(s);
    if (count > 0)
      data_->Recv(out + layout.slot_offsets[s] * hidden, count * hidden, slots[s].rank);
  }
  f->data = data_->Detach();
  f->posted = true;
  return absl::OkStatus();
}

absl::Status ClusterExchange::Complete(int micro_batch) {
  if (micro_batch < 0 || micro_batch >= kMaxInFlight) {
    return absl::InternalError(absl::StrCat("micro-batch ", micro_batch, " out of range"));
  }
  Flight* f = &flights_[micro_batch];
  if (!f->posted) return absl::OkStatus();  // dispatched within Post
  f->posted = false;
  const double timeout = options_.worker_timeout_seconds;
  MOE_RETURN_IF_ERROR(f->control->Wait(f->what, limits()));
  MOE_RETURN_IF_ERROR(f->data->Wait(timeout, f->what + " rows", options_.liveness));
  MOE_RETURN_IF_ERROR(f->replies_in->Wait(f->what, limits()));
  if (f->device_out != nullptr) {
    backend_->ToDevice(f->device_out, f->host_out.data(), f->host_out.size() * sizeof(float));
    MOE_RETURN_IF_ERROR(backend_->Sync());
  }
  return Finish(f);
}

absl::Status ClusterExchange::Shutdown(double timeout_seconds) {
  command_acks_.assign(command_acks_.size(), ReplyHeader{});
  ++step_id_;
  for (int r = 1; r <= placement().n_workers(); ++r) {
    command_headers_[r] = StepHeader{
        kStepMagic, static_cast<int32_t>(StepCommand::kShutdown), step_id_, 0, 0, 0, 0, 0, 0};
    messenger_->Send(&command_headers_[r], sizeof(StepHeader), Element::kByte, r, kHeaderTag);
  }
  std::unique_ptr<Transfers> sends = messenger_->Take();
  for (int r = 1; r <= placement().n_workers(); ++r) {
    messenger_->Recv(&command_acks_[r], sizeof(ReplyHeader), Element::kByte, r, kReplyTag);
  }
  std::unique_ptr<Transfers> acks = messenger_->Take();
  // A small send completes without its receiver, so only the acknowledgement shows that a worker
  // is there to leave with us; one that is stopped or gone cannot send it. What is still pending
  // when the groups go is withdrawn.
  const WaitLimits limits{timeout_seconds, nullptr, options_.liveness};
  absl::Status acked = acks->Wait("shutdown", limits);
  if (acked.ok()) acked = sends->Wait("shutdown", limits);
  if (!acked.ok()) return absl::UnavailableError(acked.message());
  return absl::OkStatus();
}

}  // namespace moe
