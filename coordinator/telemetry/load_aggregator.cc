#include "coordinator/telemetry/load_aggregator.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "coordinator/telemetry/imbalance.h"

namespace moe {
namespace {

double SteadySeconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

LoadAggregatorOptions WithClock(LoadAggregatorOptions options) {
  if (!options.now_seconds) options.now_seconds = SteadySeconds;
  return options;
}

// Adds the counting figures of `s` (since its reset) into `into`, sized to `s` on first use.
// Labels past LabelLoads::kMaxLabels distinct ones (over all epochs) count under "(other)".
void AddCounters(const LoadSnapshot& s, LoadCounters* into) {
  into->expert_tokens.resize(s.layers.size());
  into->locality_pairs.resize(s.layers.size(), 0);
  into->straggler_seconds.resize(s.layers.size(), 0.0);
  for (size_t l = 0; l < s.layers.size(); ++l) {
    const LayerLoad& layer = s.layers[l];
    into->expert_tokens[l].resize(layer.expert_tokens.size(), 0);
    for (size_t e = 0; e < layer.expert_tokens.size(); ++e)
      into->expert_tokens[l][e] += layer.expert_tokens[e];
    into->locality_pairs[l] += layer.locality.pairs;
    into->straggler_seconds[l] += layer.straggler_seconds;
  }
  into->exchange_seconds += s.exchange_seconds;
  into->exchanges += s.exchanges;
  into->workers.resize(s.workers.size());
  for (size_t w = 0; w < s.workers.size(); ++w) {
    const WorkerLoad& from = s.workers[w];
    WorkerLoad& to = into->workers[w];
    to.rank = from.rank;
    to.routed_tokens += from.routed_tokens;
    to.reported_tokens += from.reported_tokens;
    to.exchanges += from.exchanges;
    to.compute_seconds += from.compute_seconds;
    to.exchange_wait_seconds += from.exchange_wait_seconds;
    to.idle_seconds += from.idle_seconds;
    to.bytes_in += from.bytes_in;
    to.bytes_out += from.bytes_out;
  }
  for (const LabelLoad& from : s.labels) {
    auto it = std::find_if(into->labels.begin(), into->labels.end(),
                           [&](const LabelLoad& l) { return l.label == from.label; });
    if (it == into->labels.end()) {
      if (static_cast<int>(into->labels.size()) >= LabelLoads::kMaxLabels) {
        it = std::find_if(into->labels.begin(), into->labels.end(),
                          [](const LabelLoad& l) { return l.label == LabelLoads::kOther; });
      }
      if (it == into->labels.end()) {
        into->labels.push_back(LabelLoad{});
        it = into->labels.end() - 1;
        it->label = static_cast<int>(into->labels.size()) > LabelLoads::kMaxLabels
                        ? LabelLoads::kOther
                        : from.label;
      }
    }
    it->requests += from.requests;
    it->prompt_tokens += from.prompt_tokens;
    it->generated_tokens += from.generated_tokens;
  }
}

}  // namespace

LoadAggregator::LoadAggregator(LoadAggregatorOptions options)
    : options_(WithClock(std::move(options))),
      n_workers_(options_.placement != nullptr ? options_.placement->n_workers() : 0),
      start_(options_.now_seconds()),
      window_(options_.window_seconds, start_,
              static_cast<size_t>(options_.n_layers) * options_.n_experts,
              static_cast<size_t>(options_.n_layers) * (static_cast<size_t>(n_workers_) + 1)),
      labels_(options_.n_layers, options_.n_experts, options_.top_k) {
  absl::MutexLock lock(&mu_);
  if (options_.placement != nullptr) {
    // Not owned: the caller's start-up placement outlives this aggregator.
    placement_ = std::shared_ptr<const ExpertPlacement>(options_.placement, [](const ExpertPlacement*) {});
    placement_info_.slots.resize(static_cast<size_t>(placement_->n_layers()));
    for (int l = 0; l < placement_->n_layers(); ++l) placement_info_.slots[l] = placement_->slots(l);
  }
  placement_info_.expert_slots = options_.expert_slots;
  ApplyResetLocked();
  epoch_ = 1;
}

void LoadAggregator::OnPlacementCommitted(const std::shared_ptr<const ExpertPlacement>& placement,
                                          uint32_t epoch) {
  absl::MutexLock lock(&mu_);
  placement_ = placement;
  for (int l = 0; l < placement_->n_layers(); ++l) placement_info_.slots[l] = placement_->slots(l);
  placement_info_.epoch = epoch;
  ApplyResetLocked();
}

void LoadAggregator::RecordRearrangement(Rearrangement done) {
  absl::MutexLock lock(&mu_);
  ++placement_info_.rearrangements;
  placement_info_.in_progress = false;
  placement_info_.has_last = true;
  placement_info_.last = std::move(done);
}

void LoadAggregator::RecordFailedRearrangement(Rearrangement failed) {
  absl::MutexLock lock(&mu_);
  ++placement_info_.failed_rearrangements;
  placement_info_.in_progress = false;
  placement_info_.has_last = true;
  placement_info_.last = std::move(failed);
}

void LoadAggregator::SetRearrangementInProgress(bool in_progress) {
  absl::MutexLock lock(&mu_);
  placement_info_.in_progress = in_progress;
}

std::shared_ptr<const ExpertPlacement> LoadAggregator::placement() const {
  absl::MutexLock lock(&mu_);
  return placement_;
}

std::vector<std::vector<double>> LoadAggregator::WindowLoads() const {
  const int L = options_.n_layers, E = options_.n_experts;
  std::vector<std::vector<double>> loads(static_cast<size_t>(L), std::vector<double>(static_cast<size_t>(E), 0.0));
  absl::MutexLock lock(&mu_);
  const LoadWindow::Bucket window = window_.Sum(Now());
  for (int l = 0; l < L; ++l) {
    for (int e = 0; e < E; ++e) {
      loads[l][e] = static_cast<double>(window.expert_tokens[static_cast<size_t>(l) * E + e]);
    }
  }
  return loads;
}

void LoadAggregator::ApplyResetLocked() {
  // The counters go on from what this epoch counted (in the constructor, nothing).
  if (!expert_tokens_.empty()) AddCounters(SnapshotLocked(), &before_reset_);
  const size_t cells = static_cast<size_t>(options_.n_layers) * options_.n_experts;
  const size_t layers = static_cast<size_t>(options_.n_layers);
  reset_pending_ = false;
  reset_at_ = Now();
  steps_ = tokens_ = 0;
  expert_tokens_.assign(cells, 0);
  worker_tokens_.assign(layers * (static_cast<size_t>(n_workers_) + 1), 0);
  window_.Clear();
  labels_.Reset();
  pairs_.assign(layers, 0);
  repeats_.assign(layers, 0);
  overlaps_.assign(layers, 0);
  straggler_.assign(layers, 0.0);
  exchange_seconds_ = 0;
  exchanges_ = 0;
  // Sequences in flight keep their previous token: a pair straddling the reset counts after it.
  workers_.resize(static_cast<size_t>(n_workers_) + 1);
  epoch_.fetch_add(1);
}

uint32_t LoadAggregator::Reset() {
  absl::MutexLock lock(&mu_);
  if (in_step_) {
    reset_pending_ = true;
    return epoch_.load() + 1;
  }
  ApplyResetLocked();
  return epoch_.load();
}

void LoadAggregator::OnStepBegin() {
  absl::MutexLock lock(&mu_);
  in_step_ = true;
}

void LoadAggregator::OnStepEnd() {
  absl::MutexLock lock(&mu_);
  in_step_ = false;
  if (reset_pending_) ApplyResetLocked();
}

void LoadAggregator::OnForward(absl::Span<const RoutedToken> tokens, absl::Span<const Routing> routing) {
  const int L = options_.n_layers, E = options_.n_experts, k = options_.top_k;
  absl::MutexLock lock(&mu_);
  ++steps_;
  tokens_ += static_cast<int64_t>(tokens.size());
  LoadWindow::Bucket* bucket = window_.At(Now());
  ++bucket->steps;
  bucket->tokens += static_cast<int64_t>(tokens.size());
  int64_t* window = bucket->expert_tokens.data();
  labels_.AddStep(tokens, routing);
  for (size_t row = 0; row < tokens.size(); ++row) {
    for (int l = 0; l < L; ++l) {
      const int32_t* chosen = routing[l].expert.data() + row * k;
      for (int j = 0; j < k; ++j) {
        ++expert_tokens_[static_cast<size_t>(l) * E + chosen[j]];
        ++window[static_cast<size_t>(l) * E + chosen[j]];
      }
    }
    // Temporal locality: compare with this sequence's previous position, if we saw it.
    Previous& prev = previous_[tokens[row].sequence_id];
    const bool consecutive = !prev.experts.empty() && prev.position + 1 == tokens[row].position;
    prev.experts.resize(static_cast<size_t>(L) * k);
    for (int l = 0; l < L; ++l) {
      const int32_t* now = routing[l].expert.data() + row * k;
      int32_t* before = prev.experts.data() + static_cast<size_t>(l) * k;
      if (consecutive) {
        bool overlap = false;
        for (int a = 0; a < k && !overlap; ++a) {
          overlap = std::find(before, before + k, now[a]) != before + k;
        }
        ++pairs_[l];
        repeats_[l] += now[0] == before[0];
        overlaps_[l] += overlap;
        ++bucket->pairs;
        bucket->first_choice_repeats += now[0] == before[0];
        bucket->set_overlaps += overlap;
      }
      std::copy(now, now + k, before);
    }
    prev.position = tokens[row].position;
  }
  // Rows per worker as the exchange sent them: the split over replicas is a deterministic function
  // of the routing and the placement, so replaying it here counts what ran. A step run as two
  // micro-batches was planned as two dispatches, so it is replayed as two.
  if (n_workers_ > 0) {
    const int64_t n = static_cast<int64_t>(tokens.size());
    int64_t split = 0;
    while (split < n && !tokens[static_cast<size_t>(split)].second_micro_batch) ++split;
    const size_t ranks = static_cast<size_t>(n_workers_) + 1;
    for (int l = 0; l < L; ++l) {
      for (auto [begin, end] : {std::pair<int64_t, int64_t>{0, split}, {split, n}}) {
        if (begin == end) continue;
        const Routing* group = &routing[l];
        if (end - begin != n) {  // a micro-batch: its rows' routing alone
          group_routing_.top_k = k;
          group_routing_.expert.assign(routing[l].expert.begin() + begin * k, routing[l].expert.begin() + end * k);
          group = &group_routing_;
        }
        PlanDispatch(*group, end - begin, *placement_, l, /*hidden=*/0, &plan_);
        for (size_t r = 1; r < ranks; ++r) {
          worker_tokens_[static_cast<size_t>(l) * ranks + r] += plan_.rank_load[r];
          bucket->worker_tokens[static_cast<size_t>(l) * ranks + r] += plan_.rank_load[r];
        }
      }
    }
  }
}

void LoadAggregator::OnSequenceStart(uint64_t sequence_id, const SequenceInfo& info) {
  absl::MutexLock lock(&mu_);
  labels_.StartSequence(sequence_id, info);
}

void LoadAggregator::OnSequenceEnd(uint64_t sequence_id) {
  absl::MutexLock lock(&mu_);
  previous_.erase(sequence_id);
  labels_.EndSequence(sequence_id);
}

void LoadAggregator::OnExchange(const ExchangeRecord& record) {
  double slowest = 0, sum = 0;
  for (int r = 1; r <= n_workers_ && r < static_cast<int>(record.worker_compute_seconds.size()); ++r) {
    slowest = std::max(slowest, record.worker_compute_seconds[r]);
    sum += record.worker_compute_seconds[r];
  }
  absl::MutexLock lock(&mu_);
  LoadWindow::Bucket* bucket = window_.At(Now());
  if (n_workers_ > 0 && record.layer >= 0 && record.layer < options_.n_layers) {
    straggler_[record.layer] += slowest - sum / n_workers_;
    bucket->straggler_seconds += slowest - sum / n_workers_;
  }
  exchange_seconds_ += record.wall_seconds;
  ++exchanges_;
  bucket->exchange_seconds += record.wall_seconds;
  ++bucket->exchanges;
}

absl::Status LoadAggregator::OnWorkerReport(const WorkerReport& report, uint64_t stream) {
  // Checked so that the sums in Snapshot() cannot overflow: every count is below 2^48.
  constexpr int64_t kMaxCount = int64_t{1} << 48;
  auto count_ok = [](int64_t v) { return v >= 0 && v < kMaxCount; };
  auto seconds_ok = [](double v) { return std::isfinite(v) && v >= 0; };
  const int rank = report.rank;
  if (rank < 1 || rank > n_workers_) {
    return absl::InvalidArgumentError(absl::StrCat("report from rank ", rank, "; the workers are 1..", n_workers_));
  }
  if (!count_ok(report.exchanges) || !count_ok(report.bytes_in) || !count_ok(report.bytes_out) ||
      !seconds_ok(report.compute_seconds) || !seconds_ok(report.exchange_wait_seconds) ||
      !seconds_ok(report.idle_seconds)) {
    return absl::InvalidArgumentError(absl::StrCat("report from rank ", rank, " has an impossible counter"));
  }
  if (report.experts.size() > static_cast<size_t>(options_.n_layers) * options_.n_experts) {
    return absl::InvalidArgumentError(absl::StrCat("report from rank ", rank, " lists more experts than the model has"));
  }
  absl::MutexLock lock(&mu_);
  // A report of an older epoch may count experts of an older placement: liveness only (Snapshot
  // shows counts of the current epoch alone).
  const bool current = report.epoch == epoch_.load();
  for (const ExpertLoad& e : report.experts) {
    if (e.layer < 0 || e.layer >= options_.n_layers || e.expert < 0 ||
        e.expert >= options_.n_experts || (current && !placement_->Owns(rank, e.layer, e.expert)) ||
        !count_ok(e.tokens) || !seconds_ok(e.busy_seconds)) {
      return absl::InvalidArgumentError(absl::StrCat("report from rank ", rank, " counts layer ", e.layer,
                                                     " expert ", e.expert, ", which it does not host, or "
                                                     "an impossible value"));
    }
  }
  WorkerState& w = workers_[rank];
  if (w.reports > 0 && stream == w.stream && report.sequence <= w.last.sequence) {
    return absl::OkStatus();  // stale
  }
  w.last = report;
  w.stream = stream;
  ++w.reports;
  if (options_.liveness != nullptr) options_.liveness->OnReport(rank);
  return absl::OkStatus();
}

LoadSnapshot LoadAggregator::Snapshot() const {
  absl::MutexLock lock(&mu_);
  LoadSnapshot s = SnapshotLocked();
  s.lifetime = before_reset_;
  AddCounters(s, &s.lifetime);
  return s;
}

LoadSnapshot LoadAggregator::SnapshotLocked() const {
  const int L = options_.n_layers, E = options_.n_experts, k = options_.top_k, W = n_workers_;
  LoadSnapshot s;
  const double now = Now();
  s.epoch = epoch_.load();
  s.uptime_seconds = now - start_;
  s.seconds_since_reset = now - reset_at_;
  s.window_seconds = options_.window_seconds;
  s.num_layers = L;
  s.num_experts = E;
  s.top_k = k;
  s.num_workers = W;
  s.steps = steps_;
  s.tokens = tokens_;

  const LoadWindow::Bucket window_sum = window_.Sum(now);
  std::vector<std::vector<double>> expert_loads(L), worker_loads(L), window_worker_loads(L);
  std::vector<int64_t> routed(static_cast<size_t>(W) + 1, 0);
  RoutingLocality& all = s.locality;
  double straggler = 0;
  s.layers.resize(static_cast<size_t>(L));
  for (int l = 0; l < L; ++l) {
    LayerLoad& layer = s.layers[l];
    layer.layer = l;
    std::vector<double> window(static_cast<size_t>(E), 0.0);
    worker_loads[l].assign(static_cast<size_t>(W), 0.0);
    window_worker_loads[l].assign(static_cast<size_t>(W), 0.0);
    for (int e = 0; e < E; ++e) {
      const int64_t n = expert_tokens_[static_cast<size_t>(l) * E + e];
      const int64_t in_window = window_sum.expert_tokens[static_cast<size_t>(l) * E + e];
      layer.expert_tokens.push_back(n);
      layer.expert_window_tokens.push_back(in_window);
      expert_loads[l].push_back(static_cast<double>(n));
      window[e] = static_cast<double>(in_window);
    }
    for (int r = 1; r <= W; ++r) {
      const int64_t n = worker_tokens_[static_cast<size_t>(l) * (W + 1) + r];
      worker_loads[l][r - 1] = static_cast<double>(n);
      window_worker_loads[l][r - 1] =
          static_cast<double>(window_sum.worker_tokens[static_cast<size_t>(l) * (W + 1) + r]);
      routed[r] += n;
    }
    for (double w : worker_loads[l]) layer.worker_tokens.push_back(static_cast<int64_t>(w));
    layer.expert_imbalance = ComputeImbalance(expert_loads[l]);
    layer.expert_window_imbalance = ComputeImbalance(window);
    layer.worker_imbalance = ComputeImbalance(worker_loads[l]);
    layer.locality.pairs = pairs_[l];
    layer.locality.first_choice_repeats = repeats_[l];
    layer.locality.set_overlaps = overlaps_[l];
    FinishLocality(E, k, &layer.locality);
    all.pairs += pairs_[l];
    all.first_choice_repeats += repeats_[l];
    all.set_overlaps += overlaps_[l];
    layer.straggler_seconds = straggler_[l];
    straggler += straggler_[l];
  }
  FinishLocality(E, k, &all);
  s.expert_imbalance = ComputeOverallImbalance(expert_loads);
  s.worker_imbalance = ComputeOverallImbalance(worker_loads);
  s.straggler_seconds = straggler;
  s.exchange_seconds = exchange_seconds_;
  s.exchanges = exchanges_;
  WindowLoad& w = s.window;
  w.steps = window_sum.steps;
  w.tokens = window_sum.tokens;
  w.locality.pairs = window_sum.pairs;
  w.locality.first_choice_repeats = window_sum.first_choice_repeats;
  w.locality.set_overlaps = window_sum.set_overlaps;
  FinishLocality(E, k, &w.locality);
  w.worker_imbalance = ComputeOverallImbalance(window_worker_loads);
  w.straggler_seconds = window_sum.straggler_seconds;
  w.exchange_seconds = window_sum.exchange_seconds;
  w.exchanges = window_sum.exchanges;
  s.labels = labels_.Snapshot();

  const uint32_t epoch = epoch_.load();
  s.workers.resize(static_cast<size_t>(W));
  for (int r = 1; r <= W; ++r) {
    const WorkerState& state = workers_[r];
    WorkerLoad& w = s.workers[r - 1];
    w.rank = r;
    w.routed_tokens = routed[r];
    w.reports = state.reports;
    if (options_.liveness != nullptr) {
      const WorkerLiveness::State life = options_.liveness->state(r);
      w.seconds_since_report = life.seconds_since_report;
      w.alive = life.alive;
    }
    w.host = state.last.host;
    w.placement_epoch = state.reports > 0 ? state.last.placement_epoch : 0;
    // A report from before the reset describes steps that no longer count: the worker has run
    // nothing in this epoch yet (its first step in it would have moved its report to it).
    if (state.reports == 0 || state.last.epoch != epoch) continue;
    const WorkerReport& rep = state.last;
    int64_t tokens = 0;
    for (const ExpertLoad& e : rep.experts) tokens += e.tokens;
    w.reported_tokens = tokens;
    w.exchanges = rep.exchanges;
    w.compute_seconds = rep.compute_seconds;
    w.exchange_wait_seconds = rep.exchange_wait_seconds;
    w.idle_seconds = rep.idle_seconds;
    w.bytes_in = rep.bytes_in;
    w.bytes_out = rep.bytes_out;
    w.experts = rep.experts;
  }
  s.placement = placement_info_;
  return s;
}

}  // namespace moe
