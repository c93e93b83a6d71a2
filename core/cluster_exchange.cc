#include "core/cluster_exchange.h"

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "core/mpi_wait.h"
#include "core/status_macros.h"

namespace moe {
namespace {

constexpr uint32_t kStepMagic = 0x4d6f4553;   // "MoES"
constexpr uint32_t kReplyMagic = 0x4d6f4552;  // "MoER"
enum Tag : int { kHeaderTag = 101, kCountsTag, kIdsTag, kReplyTag };  // rows: the data plane's
constexpr int kCoordinator = 0;

using Clock = std::chrono::steady_clock;

absl::Status CheckMessageSize(int64_t elements, const char* what) {
  if (elements > INT_MAX) {
    return absl::ResourceExhaustedError(
        absl::StrCat(what, " of ", elements, " elements exceeds one MPI message; use smaller steps"));
  }
  return absl::OkStatus();
}

}  // namespace

ClusterExchange::ClusterExchange(const ExpertPlacement* placement, DataPlane* data,
                                 kernels::Backend* staging, ClusterExchangeOptions options)
    : placement_(placement), data_(data), staging_(staging), options_(options),
      staged_rows_(staging), staged_out_(staging) {
  const size_t ranks = static_cast<size_t>(placement_->n_workers()) + 1;
  send_ids_.resize(ranks);
  send_counts_.resize(ranks);
  replies_.resize(ranks);
  headers_.resize(ranks);
  stats_.worker_compute_seconds.assign(ranks, 0.0);
  stats_.worker_rows.assign(ranks, 0);
}

absl::Status ClusterExchange::Exchange(const ExpertBatch& batch, std::vector<float>* out) {
  const int64_t n = batch.n_rows() * batch.hidden;
  if (static_cast<int64_t>(batch.rows.size()) != n) {
    return absl::InvalidArgumentError("expert batch rows do not match its offsets");
  }
  out->resize(static_cast<size_t>(n));
  if (data_->device_memory()) {
    // Host rows on a device plane: through the backend's memory and back.
    if (staging_ == nullptr || !data_->Reads(*staging_)) {
      return absl::FailedPreconditionError("the exchange's data plane needs a staging backend");
    }
    if (!staged_rows_.Reserve(n) || !staged_out_.Reserve(n)) {
      return absl::ResourceExhaustedError(absl::StrCat("out of ", staging_->Describe(),
                                                       " memory for ", batch.n_rows(), " rows"));
    }
    staging_->ToDevice(staged_rows_.data(), batch.rows.data(), static_cast<size_t>(n) * sizeof(float));
    MOE_RETURN_IF_ERROR(staging_->Sync());
    MOE_RETURN_IF_ERROR(ExchangeBackendRows(batch, staged_rows_.data(), staged_out_.data()));
    staging_->ToHost(out->data(), staged_out_.data(), static_cast<size_t>(n) * sizeof(float));
    return staging_->Sync();
  }
  return ExchangeBackendRows(batch, batch.rows.data(), out->data());
}

absl::Status ClusterExchange::ExchangeBackendRows(const ExpertBatch& batch, const float* rows,
                                                  float* out) {
  const auto start = Clock::now();
  const int n_workers = placement_->n_workers();
  const int n_experts = batch.n_experts();
  const int64_t hidden = batch.hidden;
  if (n_experts != placement_->n_experts()) {
    return absl::InternalError("expert batch and placement disagree on the expert count");
  }
  // A signal stops the run between exchanges, never inside one: workers are then idle and the
  // shutdown that follows reaches them.
  if (options_.stop_requested != nullptr && options_.stop_requested->load()) {
    return absl::CancelledError("stopped by a signal");
  }
  ++step_id_;

  // Each worker's share: its rows per expert and their expert ids, in expert order.
  for (int r = 1; r <= n_workers; ++r) {
    send_counts_[r].assign(static_cast<size_t>(n_experts), 0);
    send_ids_[r].clear();
  }
  for (int e = 0; e < n_experts; ++e) {
    const int64_t count = batch.expert_offsets[e + 1] - batch.expert_offsets[e];
    if (count == 0) continue;
    const int r = placement_->owner(batch.layer, e);
    send_counts_[r][e] = count;
    send_ids_[r].insert(send_ids_[r].end(), static_cast<size_t>(count), e);
    MOE_RETURN_IF_ERROR(CheckMessageSize(count * hidden, "one expert's rows"));
  }
  // Every check before the first send: once requests are posted, the only ways out are success or
  // aborting the job (a half-posted step cannot be taken back).
  for (int r = 1; r <= n_workers; ++r) {
    MOE_RETURN_IF_ERROR(CheckMessageSize(static_cast<int64_t>(send_ids_[r].size()) * hidden,
                                         "a dispatch to one worker"));
  }

  const uint32_t epoch = options_.telemetry_epoch != nullptr ? options_.telemetry_epoch->load() : 0;
  std::vector<MPI_Request> control, replies;
  std::vector<int> control_peers, reply_peers;
  for (int r = 1; r <= n_workers; ++r) {
    const int64_t n = static_cast<int64_t>(send_ids_[r].size());
    StepHeader& h = headers_[r];
    h = StepHeader{kStepMagic, static_cast<int32_t>(StepCommand::kForward), step_id_,
                   batch.layer, n_experts, n, hidden, epoch,
                   static_cast<uint32_t>(std::clamp(options_.worker_timeout_seconds, 0.0, 4e6) * 1e3)};
    MPI_Request req;
    MPI_Isend(&h, sizeof(h), MPI_BYTE, r, kHeaderTag, MPI_COMM_WORLD, &req);
    control.push_back(req);
    MPI_Isend(send_counts_[r].data(), n_experts, MPI_INT64_T, r, kCountsTag, MPI_COMM_WORLD, &req);
    control.push_back(req);
    control_peers.insert(control_peers.end(), 2, r);
    if (n > 0) {
      MPI_Isend(send_ids_[r].data(), static_cast<int>(n), MPI_INT32_T, r, kIdsTag, MPI_COMM_WORLD, &req);
      control.push_back(req);
      control_peers.push_back(r);
    }
    MPI_Irecv(&replies_[r], sizeof(ReplyHeader), MPI_BYTE, r, kReplyTag, MPI_COMM_WORLD, &req);
    replies.push_back(req);
    reply_peers.push_back(r);
    stats_.bytes_sent += n * (hidden * 4 + 4);
    stats_.bytes_received += n * hidden * 4;
  }
  const std::string what = absl::StrCat("layer ", batch.layer, " exchange (step ", step_id_, ")");
  const double timeout = options_.worker_timeout_seconds;
  // The layout first: a worker posts its side of the rows' transfers once it knows the counts.
  MOE_RETURN_IF_ERROR(WaitAll(&control, control_peers, timeout, what));
  for (int e = 0; e < n_experts; ++e) {
    const int64_t begin = batch.expert_offsets[e], count = batch.expert_offsets[e + 1] - begin;
    if (count > 0) data_->Send(rows + begin * hidden, count * hidden, placement_->owner(batch.layer, e));
  }
  MOE_RETURN_IF_ERROR(data_->Flush(timeout, what + " dispatch"));
  // Outputs land in place, expert by expert.
  for (int e = 0; e < n_experts; ++e) {
    const int64_t begin = batch.expert_offsets[e], count = batch.expert_offsets[e + 1] - begin;
    if (count > 0) data_->Recv(out + begin * hidden, count * hidden, placement_->owner(batch.layer, e));
  }
  MOE_RETURN_IF_ERROR(data_->Flush(timeout, what + " combine"));
  MOE_RETURN_IF_ERROR(WaitAll(&replies, reply_peers, timeout, what));

  double slowest = 0;
  step_compute_.assign(static_cast<size_t>(n_workers) + 1, 0.0);
  step_rows_.assign(static_cast<size_t>(n_workers) + 1, 0);
  for (int r = 1; r <= n_workers; ++r) {
    const ReplyHeader& reply = replies_[r];
    const int64_t n = static_cast<int64_t>(send_ids_[r].size());
    if (reply.magic != kReplyMagic || reply.step_id != step_id_ || reply.layer != batch.layer ||
        reply.n_rows != n) {
      return absl::InternalError(absl::StrCat(
          "worker rank ", r, " answered step ", reply.step_id, " layer ", reply.layer, " with ",
          reply.n_rows, " rows; expected step ", step_id_, " layer ", batch.layer, " with ", n,
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
  const double wall = std::chrono::duration<double>(Clock::now() - start).count();
  stats_.wall_seconds += wall;
  if (options_.observer != nullptr) {
    options_.observer->OnExchange(ExchangeRecord{batch.layer, wall, step_compute_, step_rows_});
  }
  return absl::OkStatus();
}

void ClusterExchange::Shutdown() {
  std::vector<MPI_Request> requests;
  std::vector<int> peers;
  for (int r = 1; r <= placement_->n_workers(); ++r) {
    headers_[r] = StepHeader{kStepMagic, static_cast<int32_t>(StepCommand::kShutdown), ++step_id_,
                             0, 0, 0, 0, 0, 0};
    MPI_Request req;
    MPI_Isend(&headers_[r], sizeof(StepHeader), MPI_BYTE, r, kHeaderTag, MPI_COMM_WORLD, &req);
    requests.push_back(req);
    peers.push_back(r);
  }
  // A worker that is gone cannot receive; do not wait for it forever.
  WaitAll(&requests, peers, 2.0, "shutdown").IgnoreError();
  for (MPI_Request& r : requests) {
    if (r != MPI_REQUEST_NULL) {
      MPI_Cancel(&r);
      MPI_Request_free(&r);
    }
  }
}

absl::Status ServeExperts(ExpertRunner* runner, const ExpertServeOptions& opt) {
  const int n_experts = opt.placement->n_experts();
  const std::string who = absl::StrCat("worker rank ", opt.rank);
  DataPlane* data = opt.data;
  // Rows land in the runner's backend memory when the plane can write there (NCCL on the GPU, MPI
  // on the CPU), else in host vectors the runner copies from (MPI to a GPU worker).
  const bool in_backend = opt.backend != nullptr && data->Reads(*opt.backend) &&
                          runner->TakesBackendRows(*opt.backend);
  if (data->device_memory() && !in_backend) {
    return absl::InternalError(absl::StrCat(who, ": a device data plane needs the runner's backend"));
  }
  int64_t last_step = 0;
  StepHeader h;
  std::vector<int64_t> counts;
  std::vector<int32_t> ids;
  ExpertBatch batch;
  std::vector<float> out;  // host rows
  kernels::BackendArray<float> rows_dev(opt.backend), out_dev(opt.backend);  // backend rows
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
    if (h.magic != kStepMagic || h.step_id <= last_step) {
      return absl::InternalError(absl::StrCat(who, ": unexpected step header (magic ", h.magic,
                                              ", step ", h.step_id, " after ", last_step, ")"));
    }
    last_step = h.step_id;
    if (h.command == static_cast<int32_t>(StepCommand::kShutdown)) return absl::OkStatus();
    if (h.command != static_cast<int32_t>(StepCommand::kForward) || h.layer < 0 ||
        h.layer >= opt.n_layers || h.n_experts != n_experts || h.hidden != opt.hidden ||
        h.n_rows < 0 || h.n_rows * h.hidden > INT_MAX) {
      return absl::InternalError(absl::StrCat(who, ": step ", h.step_id, " header does not fit ",
                                              "this model (command ", h.command, ", layer ", h.layer,
                                              ", experts ", h.n_experts, ", hidden ", h.hidden,
                                              ", rows ", h.n_rows, ")"));
    }
    const auto receive_start = Clock::now();
    const double timeout = h.timeout_ms / 1e3 + 30.0;  // the coordinator gives up first
    const int n = static_cast<int>(h.n_rows);
    counts.resize(static_cast<size_t>(n_experts));
    ids.resize(static_cast<size_t>(n));
    requests.assign(1, MPI_REQUEST_NULL);
    MPI_Irecv(counts.data(), n_experts, MPI_INT64_T, kCoordinator, kCountsTag, MPI_COMM_WORLD, &requests[0]);
    if (n > 0) {
      requests.resize(2);
      MPI_Irecv(ids.data(), n, MPI_INT32_T, kCoordinator, kIdsTag, MPI_COMM_WORLD, &requests[1]);
    }
    const std::vector<int> peers(requests.size(), kCoordinator);
    MOE_RETURN_IF_ERROR(WaitAll(&requests, peers, timeout, who + " receiving a dispatch"));

    // The layout must match the header, the ids and this worker's share of the placement.
    batch.layer = h.layer;
    batch.hidden = h.hidden;
    batch.expert_offsets.assign(static_cast<size_t>(n_experts) + 1, 0);
    for (int e = 0; e < n_experts; ++e) {
      if (counts[e] < 0 || (counts[e] > 0 && !opt.placement->Owns(opt.rank, h.layer, e))) {
        return absl::InternalError(absl::StrCat(who, ": step ", h.step_id, " sends ", counts[e],
                                                " rows for layer ", h.layer, " expert ", e,
                                                ", which this worker does not host"));
      }
      batch.expert_offsets[e + 1] = batch.expert_offsets[e] + counts[e];
      for (int64_t i = batch.expert_offsets[e]; i < batch.expert_offsets[e + 1] && i < n; ++i) {
        if (ids[i] != e) {
          return absl::InternalError(absl::StrCat(who, ": step ", h.step_id, " row ", i,
                                                  " is labelled expert ", ids[i], ", expected ", e));
        }
      }
    }
    if (batch.expert_offsets.back() != h.n_rows) {
      return absl::InternalError(absl::StrCat(who, ": step ", h.step_id, " counts add up to ",
                                              batch.expert_offsets.back(), " rows, header says ",
                                              h.n_rows));
    }
    // The rows, one transfer per expert as the coordinator sends them, into one buffer.
    const int64_t elements = h.n_rows * h.hidden;
    float* rows = nullptr;
    float* outputs = nullptr;
    if (in_backend) {
      if (!rows_dev.Reserve(elements) || !out_dev.Reserve(elements)) {
        return absl::ResourceExhaustedError(absl::StrCat(who, ": out of ", opt.backend->Describe(),
                                                         " memory for ", h.n_rows, " rows"));
      }
      batch.rows.clear();
      rows = rows_dev.data();
      outputs = out_dev.data();
    } else {
      batch.rows.resize(static_cast<size_t>(elements));
      out.resize(static_cast<size_t>(elements));
      rows = batch.rows.data();
      outputs = out.data();
    }
    for (int e = 0; e < n_experts; ++e) {
      if (counts[e] > 0) data->Recv(rows + batch.expert_offsets[e] * h.hidden, counts[e] * h.hidden, kCoordinator);
    }
    MOE_RETURN_IF_ERROR(data->Flush(timeout, who + " receiving a dispatch"));

    const auto start = Clock::now();
    MOE_RETURN_IF_ERROR(in_backend ? runner->RunExpertsOnBackendRows(batch, rows, outputs)
                               : runner->RunExperts(batch, outputs));
    const auto computed = Clock::now();
    ReplyHeader reply{kReplyMagic, h.layer, h.step_id, h.n_rows,
                      std::chrono::duration<double>(computed - start).count()};
    for (int e = 0; e < n_experts; ++e) {
      if (counts[e] > 0) data->Send(outputs + batch.expert_offsets[e] * h.hidden, counts[e] * h.hidden, kCoordinator);
    }
    MOE_RETURN_IF_ERROR(data->Flush(timeout, who + " returning outputs"));
    requests.assign(1, MPI_REQUEST_NULL);
    MPI_Isend(&reply, sizeof(reply), MPI_BYTE, kCoordinator, kReplyTag, MPI_COMM_WORLD, &requests[0]);
    MOE_RETURN_IF_ERROR(WaitAll(&requests, {kCoordinator}, timeout, who + " returning outputs"));
    if (opt.observer != nullptr) {
      const auto done = Clock::now();
      const double* seconds = runner->LastExpertSeconds();
      opt.observer->OnWorkerStep(WorkerStepRecord{
          h.telemetry_epoch, h.step_id, h.layer, counts,
          seconds != nullptr ? absl::MakeConstSpan(seconds, static_cast<size_t>(n_experts))
                             : absl::Span<const double>(),
          reply.compute_seconds,
          std::chrono::duration<double>((start - receive_start) + (done - computed)).count(),
          std::chrono::duration<double>(receive_start - idle_start).count(),
          static_cast<int64_t>(sizeof(StepHeader)) + n_experts * 8 + int64_t{n} * (4 + h.hidden * 4),
          static_cast<int64_t>(sizeof(ReplyHeader)) + int64_t{n} * h.hidden * 4});
    }
  }
}

}  // namespace moe
