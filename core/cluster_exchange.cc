#include "core/cluster_exchange.h"

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "core/cluster_protocol.h"
#include "core/mpi_wait.h"
#include "core/status_macros.h"

namespace moe {
namespace {

using Clock = std::chrono::steady_clock;
using protocol::AnswerPlacementCommand;
using protocol::CheckMessageSize;
using protocol::kCoordinator;
using protocol::kCountsTag;
using protocol::kHeaderTag;
using protocol::kIdsTag;
using protocol::kReplyTag;

}  // namespace

ClusterExchange::ClusterExchange(const ExpertPlacement* placement, DataPlane* data,
                                 kernels::Backend* backend, ClusterExchangeOptions options)
    : placement_(placement), data_(data), backend_(backend), options_(options) {
  const size_t ranks = static_cast<size_t>(placement_->n_workers()) + 1;
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
  MOE_RETURN_IF_ERROR(ValidateLayout(layout, *placement_));
  if (backend_ == nullptr || data_->Reads(*backend_)) return Exchange(layout, rows, out);
  if (data_->device_memory()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the exchange's data plane (", data_->Describe(), ") cannot read ", backend_->Describe(),
        " memory"));
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
  const int n_workers = placement_->n_workers();
  const int n_slots = layout.n_slots();
  const int64_t hidden = layout.hidden;
  const std::vector<ExpertSlot>& slots = placement_->slots(layout.layer);
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
    f->headers[r] = StepHeader{kStepMagic, static_cast<int32_t>(StepCommand::kForward), f->step_id,
                               layout.layer, n_slots, static_cast<int64_t>(f->send_ids[r].size()), hidden,
                               epoch,
                               static_cast<uint32_t>(std::clamp(options_.worker_timeout_seconds, 0.0, 4e6) * 1e3),
                               0, static_cast<uint32_t>(micro_batch)};
  }
  return absl::OkStatus();
}

void ClusterExchange::PostControl(Flight* f) {
  const int n_slots = f->layout->n_slots();
  const int64_t hidden = f->layout->hidden;
  f->control.clear();
  f->control_peers.clear();
  f->reply_requests.clear();
  f->reply_peers.clear();
  for (int r = 1; r <= placement_->n_workers(); ++r) {
    const int64_t n = static_cast<int64_t>(f->send_ids[r].size());
    MPI_Request req;
    MPI_Isend(&f->headers[r], sizeof(StepHeader), MPI_BYTE, r, kHeaderTag, MPI_COMM_WORLD, &req);
    f->control.push_back(req);
    MPI_Isend(f->send_counts[r].data(), n_slots, MPI_INT64_T, r, kCountsTag, MPI_COMM_WORLD, &req);
    f->control.push_back(req);
    f->control_peers.insert(f->control_peers.end(), 2, r);
    if (n > 0) {
      MPI_Isend(f->send_ids[r].data(), static_cast<int>(n), MPI_INT32_T, r, kIdsTag, MPI_COMM_WORLD, &req);
      f->control.push_back(req);
      f->control_peers.push_back(r);
    }
    MPI_Irecv(&f->replies[r], sizeof(ReplyHeader), MPI_BYTE, r, kReplyTag, MPI_COMM_WORLD, &req);
    f->reply_requests.push_back(req);
    f->reply_peers.push_back(r);
    stats_.bytes_sent += n * (hidden * 4 + 4);
    stats_.bytes_received += n * hidden * 4;
  }
}

absl::Status ClusterExchange::Finish(Flight* f) {
  const int n_workers = placement_->n_workers();
  const ExpertLayout& layout = *f->layout;
  double slowest = 0;
  step_compute_.assign(static_cast<size_t>(n_workers) + 1, 0.0);
  step_rows_.assign(static_cast<size_t>(n_workers) + 1, 0);
  for (int r = 1; r <= n_workers; ++r) {
    const ReplyHeader& reply = f->replies[r];
    const int64_t n = static_cast<int64_t>(f->send_ids[r].size());
    if (reply.magic != kReplyMagic || reply.step_id != f->step_id || reply.layer != layout.layer ||
        reply.n_rows != n) {
      return absl::InternalError(absl::StrCat(
          "worker rank ", r, " answered step ", reply.step_id, " layer ", reply.layer, " with ",
          reply.n_rows, " rows; expected step ", f->step_id, " layer ", layout.layer, " with ", n,
          " rows (protocol mismatch)"));
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
  const std::vector<ExpertSlot>& slots = placement_->slots(layout.layer);
  const double timeout = options_.worker_timeout_seconds;
  // The layout first: a worker posts its side of the rows' transfers once it knows the counts
  // (NCCL's transfers must meet in order; MPI would not mind).
  MOE_RETURN_IF_ERROR(WaitAll(&f->control, f->control_peers, timeout, f->what, nullptr, options_.liveness));
  for (int s = 0; s < n_slots; ++s) {
    const int64_t count = layout.rows_of(s);
    if (count > 0) data_->Send(rows + layout.slot_offsets[s] * hidden, count * hidden, slots[s].rank);
  }
  MOE_RETURN_IF_ERROR(data_->Flush(timeout, f->what + " dispatch", options_.liveness));
  // Outputs land in place, slot by slot.
  for (int s = 0; s < n_slots; ++s) {
    const int64_t count = layout.rows_of(s);
    if (count > 0) data_->Recv(out + layout.slot_offsets[s] * hidden, count * hidden, slots[s].rank);
  }
  MOE_RETURN_IF_ERROR(data_->Flush(timeout, f->what + " combine", options_.liveness));
  MOE_RETURN_IF_ERROR(WaitAll(&f->reply_requests, f->reply_peers, timeout, f->what, nullptr, options_.liveness));
  return Finish(f);
}

absl::Status ClusterExchange::Post(const ExpertLayout& layout, const float* rows, float* out, int micro_batch) {
  if (micro_batch < 0 || micro_batch >= kMaxInFlight || flights_[micro_batch].posted) {
    return absl::InternalError(absl::StrCat("micro-batch ", micro_batch, " posted twice or out of range"));
  }
  if (!can_overlap_) return Dispatch(layout, rows, out);
  MOE_RETURN_IF_ERROR(ValidateLayout(layout, *placement_));
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
  // Everything posted at once: the rows out and the receives of their outputs. MPI matches a
  // peer's messages in the order sent, and a worker serves steps in the order they come.
  const int64_t hidden = layout.hidden;
  const std::vector<ExpertSlot>& slots = placement_->slots(layout.layer);
  for (int s = 0; s < layout.n_slots(); ++s) {
    const int64_t count = layout.rows_of(s);
    if (count > 0) data_->Send(rows + layout.slot_offsets[s] * hidden, count * hidden, slots[s].rank);
  }
  for (int s = 0; s < layout.n_slots(); ++s) {
    const int64_t count = layout.rows_of(s);
    if (count > 0) data_->Recv(out + layout.slot_offsets[s] * hidden, count * hidden, slots[s].rank);
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
  MOE_RETURN_IF_ERROR(WaitAll(&f->control, f->control_peers, timeout, f->what, nullptr, options_.liveness));
  MOE_RETURN_IF_ERROR(f->data->Wait(timeout, f->what + " rows", options_.liveness));
  MOE_RETURN_IF_ERROR(WaitAll(&f->reply_requests, f->reply_peers, timeout, f->what, nullptr, options_.liveness));
  if (f->device_out != nullptr) {
    backend_->ToDevice(f->device_out, f->host_out.data(), f->host_out.size() * sizeof(float));
    MOE_RETURN_IF_ERROR(backend_->Sync());
  }
  return Finish(f);
}

absl::Status ClusterExchange::Shutdown(double timeout_seconds) {
  std::vector<MPI_Request> sends, acks;
  std::vector<int> peers;
  command_acks_.assign(command_acks_.size(), ReplyHeader{});
  ++step_id_;
  for (int r = 1; r <= placement_->n_workers(); ++r) {
    command_headers_[r] = StepHeader{kStepMagic, static_cast<int32_t>(StepCommand::kShutdown), step_id_,
                                     0, 0, 0, 0, 0, 0};
    MPI_Request req;
    MPI_Isend(&command_headers_[r], sizeof(StepHeader), MPI_BYTE, r, kHeaderTag, MPI_COMM_WORLD, &req);
    sends.push_back(req);
    MPI_Irecv(&command_acks_[r], sizeof(ReplyHeader), MPI_BYTE, r, kReplyTag, MPI_COMM_WORLD, &req);
    acks.push_back(req);
    peers.push_back(r);
  }
  // A small send completes without its receiver, so only the acknowledgement shows that a worker
  // is there to leave with us; one that is stopped or gone cannot send it.
  absl::Status acked = WaitAll(&acks, peers, timeout_seconds, "shutdown", nullptr, options_.liveness);
  if (acked.ok()) acked = WaitAll(&sends, peers, timeout_seconds, "shutdown", nullptr, options_.liveness);
  for (std::vector<MPI_Request>* pending : {&sends, &acks}) {
    for (MPI_Request& r : *pending) {
      if (r != MPI_REQUEST_NULL) {
        MPI_Cancel(&r);
        MPI_Request_free(&r);
      }
    }
  }
  if (!acked.ok()) return absl::UnavailableError(acked.message());
  return absl::OkStatus();
}


absl::Status ServeExperts(ExpertRunner* runner, const ExpertServeOptions& opt) {
  const ExpertPlacement* placement = opt.placement;
  const std::string who = absl::StrCat("worker rank ", opt.rank);
  DataPlane* data = opt.data;
  kernels::Backend* backend = opt.backend;
  // The runner reads its backend's memory (host memory without one). The plane writes there
  // directly when it can (NCCL on the GPU, MPI on the CPU); MPI to a GPU is staged through host
  // buffers here.
  const bool staged = backend != nullptr && !data->Reads(*backend);
  if ((backend == nullptr || staged) && data->device_memory()) {
    return absl::InternalError(absl::StrCat(who, ": a device data plane needs the runner's backend"));
  }
  int64_t last_step = 0;
  StepHeader h;
  std::vector<int64_t> counts;  // [slots] of the step's layer
  std::vector<int32_t> ids;     // [rows] slot of each row
  ExpertLayout layout;
  std::vector<int64_t> expert_rows;    // [experts] for telemetry: slots summed per logical expert
  std::vector<double> expert_seconds;  // [experts]
  std::vector<float> host_rows, host_out;                                  // [rows, hidden]
  kernels::BackendArray<float> backend_rows(backend), backend_out(backend);  // [rows, hidden]
  for (;;) {
    const auto idle_start = Clock::now();
    std::vector<MPI_Request> requests(1);
    MPI_Irecv(&h, sizeof(h), MPI_BYTE, kCoordinator, kHeaderTag, MPI_COMM_WORLD, &requests[0]);
    // Idle: wait as long as it takes. After a signal, give the coordinator a grace period to send
    // its shutdown, then leave on our own.
    absl::Status waited = WaitAll(&requests, {kCoordinator}, 0, who + " waiting for a step",
                                  opt.stop_requested);
    if (absl::IsCancelled(waited)) {
      waited = WaitAll(&requests, {kCoordinator}, opt.stop_grace_seconds,
                       who + " waiting for the coordinator's shutdown after a signal");
    }
    if (!waited.ok()) {
      MPI_Cancel(&requests[0]);
      MPI_Request_free(&requests[0]);
      return waited;
    }
    if (absl::Status ok = CheckStepHeader(h, last_step); !ok.ok()) {
      return absl::InternalError(absl::StrCat(who, ": ", ok.message()));
    }
    last_step = h.step_id;
    if (h.command == static_cast<int32_t>(StepCommand::kShutdown)) {
      // Acknowledged, so that the coordinator knows every worker is leaving with it.
      const ReplyHeader ack{kReplyMagic, 0, h.step_id, 0, 0.0};
      requests.assign(1, MPI_REQUEST_NULL);
      MPI_Isend(&ack, sizeof(ack), MPI_BYTE, kCoordinator, kReplyTag, MPI_COMM_WORLD, &requests[0]);
      return WaitAll(&requests, {kCoordinator}, opt.stop_grace_seconds, who + " acknowledging the shutdown");
    }
    if (h.command >= static_cast<int32_t>(StepCommand::kBeginPlacement) &&
        h.command <= static_cast<int32_t>(StepCommand::kAbortPlacement)) {
      MOE_ASSIGN_OR_RETURN(const ExpertPlacement* now, AnswerPlacementCommand(h, placement, opt));
      if (now != placement) {
        placement = now;
        if (opt.observer != nullptr) opt.observer->OnPlacementChanged(*placement, h.placement_epoch);
      }
      continue;
    }
    if (absl::Status fits = CheckForwardHeader(h, *placement, opt.n_layers, opt.hidden); !fits.ok()) {
      return absl::InternalError(absl::StrCat(who, ": ", fits.message()));
    }
    const auto receive_start = Clock::now();
    const double timeout = h.timeout_ms / 1e3 + 30.0;  // the coordinator gives up first
    const int n = static_cast<int>(h.n_rows);
    const int n_slots = h.n_slots;
    counts.resize(static_cast<size_t>(n_slots));
    ids.resize(static_cast<size_t>(n));
    requests.assign(1, MPI_REQUEST_NULL);
    MPI_Irecv(counts.data(), n_slots, MPI_INT64_T, kCoordinator, kCountsTag, MPI_COMM_WORLD,
              &requests[0]);
    if (n > 0) {
      requests.resize(2);
      MPI_Irecv(ids.data(), n, MPI_INT32_T, kCoordinator, kIdsTag, MPI_COMM_WORLD, &requests[1]);
    }
    const std::vector<int> peers(requests.size(), kCoordinator);
    MOE_RETURN_IF_ERROR(WaitAll(&requests, peers, timeout, who + " receiving a dispatch"));

    // The layout must match the header, the ids and this worker's share of the placement.
    absl::StatusOr<ExpertLayout> checked = ForwardLayout(h, counts, ids, *placement, opt.rank);
    if (!checked.ok()) return absl::InternalError(absl::StrCat(who, ": ", checked.status().message()));
    layout = *std::move(checked);
    // Where the runner reads (its backend's memory), and where the plane writes (the same, or
    // host buffers to stage from).
    const int64_t elements = h.n_rows * h.hidden;
    const size_t bytes = static_cast<size_t>(elements) * sizeof(float);
    float* run_rows = nullptr;
    float* run_out = nullptr;
    if (backend != nullptr) {
      if (!backend_rows.Reserve(elements) || !backend_out.Reserve(elements)) {
        return absl::ResourceExhaustedError(absl::StrCat(who, ": out of ", backend->Describe(),
                                                         " memory for ", h.n_rows, " rows"));
      }
      run_rows = backend_rows.data();
      run_out = backend_out.data();
    }
    float* wire_rows = run_rows;
    float* wire_out = run_out;
    if (backend == nullptr || staged) {
      host_rows.resize(static_cast<size_t>(elements));
      host_out.resize(static_cast<size_t>(elements));
      wire_rows = host_rows.data();
      wire_out = host_out.data();
      if (backend == nullptr) {
        run_rows = wire_rows;
        run_out = wire_out;
      }
    }
    // The rows, one transfer per slot as the coordinator sends them, into one buffer.
    for (int s = 0; s < n_slots; ++s) {
      const int64_t at = layout.slot_offsets[s] * h.hidden;
      if (counts[s] > 0) data->Recv(wire_rows + at, counts[s] * h.hidden, kCoordinator);
    }
    MOE_RETURN_IF_ERROR(data->Flush(timeout, who + " receiving a dispatch", nullptr));
    if (staged && bytes > 0) backend->ToDevice(run_rows, wire_rows, bytes);

    const auto start = Clock::now();
    MOE_RETURN_IF_ERROR(runner->RunExperts(layout, run_rows, run_out));
    const auto computed = Clock::now();
    if (staged && bytes > 0) {
      backend->ToHost(wire_out, run_out, bytes);
      MOE_RETURN_IF_ERROR(backend->Sync());
    }
    ReplyHeader reply{kReplyMagic, h.layer, h.step_id, h.n_rows,
                      std::chrono::duration<double>(computed - start).count()};
    for (int s = 0; s < n_slots; ++s) {
      const int64_t at = layout.slot_offsets[s] * h.hidden;
      if (counts[s] > 0) data->Send(wire_out + at, counts[s] * h.hidden, kCoordinator);
    }
    MOE_RETURN_IF_ERROR(data->Flush(timeout, who + " returning outputs", nullptr));
    requests.assign(1, MPI_REQUEST_NULL);
    MPI_Isend(&reply, sizeof(reply), MPI_BYTE, kCoordinator, kReplyTag, MPI_COMM_WORLD, &requests[0]);
    MOE_RETURN_IF_ERROR(WaitAll(&requests, {kCoordinator}, timeout, who + " returning outputs"));
    if (opt.observer != nullptr) {
      const auto done = Clock::now();
      // Telemetry counts load per logical expert: a replicated expert's slots add up.
      const double* slot_seconds = runner->LastSlotSeconds();
      expert_rows.assign(static_cast<size_t>(placement->n_experts()), 0);
      expert_seconds.assign(static_cast<size_t>(placement->n_experts()), 0.0);
      const std::vector<ExpertSlot>& slots = placement->slots(h.layer);
      for (int s = 0; s < n_slots; ++s) {
        expert_rows[slots[s].expert] += counts[s];
        if (slot_seconds != nullptr) expert_seconds[slots[s].expert] += slot_seconds[s];
      }
      opt.observer->OnWorkerStep(WorkerStepRecord{
          h.telemetry_epoch, h.step_id, h.layer, expert_rows,
          slot_seconds != nullptr ? absl::Span<const double>(expert_seconds)
                                  : absl::Span<const double>(),
          reply.compute_seconds,
          std::chrono::duration<double>((start - receive_start) + (done - computed)).count(),
          std::chrono::duration<double>(receive_start - idle_start).count(),
          static_cast<int64_t>(sizeof(StepHeader)) + n_slots * 8 + int64_t{n} * (4 + h.hidden * 4),
          static_cast<int64_t>(sizeof(ReplyHeader)) + int64_t{n} * h.hidden * 4});
    }
  }
}

}  // namespace moe
