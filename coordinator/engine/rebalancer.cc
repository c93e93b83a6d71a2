#include "coordinator/engine/rebalancer.h"

#include <chrono>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/base/status_macros.h"

namespace moe {
namespace {

double SteadySeconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

RebalanceOptions WithClock(RebalanceOptions options) {
  if (!options.now_seconds) options.now_seconds = SteadySeconds;
  return options;
}

std::vector<std::vector<ExpertSlot>> SlotsOf(const ExpertPlacement& p) {
  std::vector<std::vector<ExpertSlot>> slots(static_cast<size_t>(p.n_layers()));
  for (int l = 0; l < p.n_layers(); ++l) slots[l] = p.slots(l);
  return slots;
}

}  // namespace

Rebalancer::Rebalancer(LoadAggregator* aggregator, PlacementMover* mover,
                       const PlacementRegistry* placements, int n_workers, int n_experts,
                       RebalanceOptions options)
    : aggregator_(aggregator),
      mover_(mover),
      placements_(placements),
      n_workers_(n_workers),
      n_experts_(n_experts),
      options_(WithClock(std::move(options))),
      last_check_(options_.now_seconds()) {}

absl::StatusOr<RebalancePlan> Rebalancer::Plan(bool force) const {
  RebalancePlan out;
  const std::shared_ptr<const ExpertPlacement> current = placements_->current().placement;
  if (current == nullptr)
    return absl::FailedPreconditionError("a single process has no placement to change");
  const std::vector<std::vector<double>> loads = aggregator_->WindowLoads();
  double total = 0;
  for (const auto& layer : loads) {
    for (double x : layer) total += x;
  }
  if (total == 0) {
    out.skipped = "no routing in the load window yet";
    return out;
  }
  const std::vector<std::vector<ExpertSlot>> slots = SlotsOf(*current);
  MOE_ASSIGN_OR_RETURN(const PlacementPlan before, EvaluatePlacement(loads, slots, n_workers_));
  out.balancedness_before = before.balancedness;
  if (!force && before.balancedness >= options_.threshold) {
    out.skipped =
        absl::StrFormat("worker balancedness %.3f is already at or above the threshold %.3f",
                        before.balancedness, options_.threshold);
    return out;
  }
  PlannerOptions planner;
  planner.n_workers = n_workers_;
  planner.slots_per_worker = options_.slots_per_worker > 0
                                 ? options_.slots_per_worker
                                 : (n_experts_ + n_workers_ - 1) / n_workers_;
  planner.keep_within = options_.keep_within;
  MOE_ASSIGN_OR_RETURN(const PlacementPlan plan, PlanPlacement(loads, planner, slots));
  out.predicted_balancedness = plan.balancedness;
  out.moved_slots = plan.moved_slots;
  out.moved_experts = plan.moved_experts;
  std::vector<std::vector<ExpertSlot>> next(plan.layers.size());
  for (size_t l = 0; l < plan.layers.size(); ++l) {
    next[l] = plan.layers[l].slots;
    out.replicas += plan.layers[l].replicas;
  }
  MOE_ASSIGN_OR_RETURN(ExpertPlacement placement,
                       ExpertPlacement::FromSlots(std::move(next), n_experts_, n_workers_));
  out.placement = std::make_shared<const ExpertPlacement>(std::move(placement));
  if (plan.moved_slots == 0) {
    out.skipped = "the plan is the placement in force";
  } else if (!force && plan.balancedness < before.balancedness + options_.min_gain) {
    out.skipped = absl::StrFormat("the plan would raise worker balancedness only from %.3f to %.3f",
                                  before.balancedness, plan.balancedness);
  }
  return out;
}

absl::StatusOr<RebalanceOutcome> Rebalancer::Request(bool force, absl::Time deadline) {
  {
    absl::MutexLock lock(&mu_);
    if (stopped_) return absl::UnavailableError("the server is shutting down");
    if (busy_) return absl::AbortedError("a re-placement is already under way");
  }
  MOE_ASSIGN_OR_RETURN(RebalancePlan plan, Plan(force));
  RebalanceOutcome outcome;
  if (!plan.skipped.empty()) {
    outcome.plan = std::move(plan);
    return outcome;
  }
  absl::MutexLock lock(&mu_);
  if (stopped_) return absl::UnavailableError("the server is shutting down");
  if (busy_) return absl::AbortedError("a re-placement is already under way");
  busy_ = true;
  requested_ = std::move(plan);
  const uint64_t target = finished_ + 1;
  auto done = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return finished_ >= target; };
  if (!mu_.AwaitWithDeadline(absl::Condition(&done), deadline)) {
    return absl::DeadlineExceededError(
        "the re-placement is still under way; GetLoad's placement shows when it lands");
  }
  if (!last_status_.ok()) return last_status_;
  return last_;
}

absl::Status Rebalancer::Tick() {
  if (!move_.has_value()) {
    std::optional<RebalancePlan> plan;
    std::string trigger;
    {
      absl::MutexLock lock(&mu_);
      if (requested_.has_value()) {
        plan = std::move(requested_);
        requested_.reset();
        trigger = "request";
      }
    }
    if (!plan.has_value() && options_.interval_seconds > 0 &&
        Now() - last_check_ >= options_.interval_seconds) {
      last_check_ = Now();
      absl::StatusOr<RebalancePlan> planned = Plan(/*force=*/false);
      if (!planned.ok()) {
        std::fprintf(stderr, "moe-coordinator: re-placement check failed: %s\n",
                     std::string(planned.status().message()).c_str());
        return absl::OkStatus();
      }
      if (!planned->skipped.empty()) return absl::OkStatus();
      absl::MutexLock lock(&mu_);
      if (busy_) return absl::OkStatus();  // a request got in first
      busy_ = true;
      plan = *std::move(planned);
      trigger = "interval";
    }
    if (plan.has_value()) return Begin(*std::move(plan), std::move(trigger));
    return absl::OkStatus();
  }

  Move& move = *move_;
  const double now = Now();
  if (now - move.last_poll < options_.poll_interval_seconds) return absl::OkStatus();
  move.last_poll = now;
  absl::StatusOr<PlacementProgress> progress = mover_->PollPlacement();
  RebalanceOutcome outcome = OutcomeOf(move);
  Rearrangement& r = outcome.record;
  if (!progress.ok()) {
    if (!absl::IsFailedPrecondition(progress.status())) return progress.status();
    r.error = std::string(progress.status().message());
    r.total_seconds = now - move.started;
    std::fprintf(
        stderr,
        "moe-coordinator: re-placement to epoch %u failed, the placement in force stays: %s\n",
        move.epoch, r.error.c_str());
    aggregator_->RecordFailedRearrangement(r);
    move_.reset();
    Finish(std::move(outcome));
    return absl::OkStatus();
  }
  if (!progress->ready) return absl::OkStatus();
  r.ok = true;
  r.experts_loaded = progress->experts_loaded;
  r.load_seconds = progress->load_seconds;
  r.balancedness_before = aggregator_->Snapshot().worker_imbalance.balancedness;
  // The move commits through the placement registry, whose subscribers (the aggregator: a new
  // telemetry epoch) follow before any worker switches.
  const double switch_start = Now();
  MOE_RETURN_IF_ERROR(mover_->CommitPlacement());
  r.switch_seconds = Now() - switch_start;
  r.total_seconds = Now() - move.started;
  aggregator_->RecordRearrangement(r);
  std::printf(
      "moe-coordinator: placement epoch %u in force (%s): worker balancedness %.3f measured "
      "before, %.3f predicted; %d slots moved, %d experts loaded in %.2f s, switch %.1f ms\n",
      move.epoch, move.trigger.c_str(), r.balancedness_before, r.predicted_balancedness,
      r.moved_slots, r.experts_loaded, r.load_seconds, r.switch_seconds * 1e3);
  std::fflush(stdout);
  outcome.applied = true;
  move_.reset();
  Finish(std::move(outcome));
  return absl::OkStatus();
}

RebalanceOutcome Rebalancer::OutcomeOf(const Move& move) {
  RebalanceOutcome outcome;
  outcome.plan = move.plan;
  Rearrangement& r = outcome.record;
  r.trigger = move.trigger;
  r.epoch = move.epoch;
  r.planned_from_balancedness = move.plan.balancedness_before;
  r.predicted_balancedness = move.plan.predicted_balancedness;
  r.moved_slots = move.plan.moved_slots;
  return outcome;
}

absl::Status Rebalancer::Begin(RebalancePlan plan, std::string trigger) {
  Move move;
  move.plan = std::move(plan);
  move.trigger = std::move(trigger);
  move.started = Now();
  move.epoch = placements_->epoch() + 1;
  aggregator_->SetRearrangementInProgress(true);
  const absl::Status begun = mover_->BeginPlacement(move.plan.placement, move.epoch);
  if (absl::IsFailedPrecondition(begun)) {
    RebalanceOutcome outcome = OutcomeOf(move);
    outcome.record.error = std::string(begun.message());
    std::fprintf(
        stderr,
        "moe-coordinator: re-placement to epoch %u refused, the placement in force stays: %s\n",
        move.epoch, outcome.record.error.c_str());
    aggregator_->RecordFailedRearrangement(outcome.record);
    Finish(std::move(outcome));
    return absl::OkStatus();
  }
  MOE_RETURN_IF_ERROR(begun);
  std::printf(
      "moe-coordinator: re-placement to epoch %u begun (%s): worker balancedness %.3f -> %.3f "
      "predicted, %d slots to load\n",
      move.epoch, move.trigger.c_str(), move.plan.balancedness_before,
      move.plan.predicted_balancedness, move.plan.moved_slots);
  std::fflush(stdout);
  move_ = std::move(move);
  return absl::OkStatus();
}

void Rebalancer::Stop(bool cluster_usable) {
  {
    absl::MutexLock lock(&mu_);
    stopped_ = true;
    requested_.reset();
  }
  if (!move_.has_value() && !busy()) return;
  if (move_.has_value() && cluster_usable) mover_->AbortPlacement().IgnoreError();
  RebalanceOutcome outcome = move_.has_value() ? OutcomeOf(*move_) : RebalanceOutcome{};
  outcome.record.error = "the server stopped before the re-placement was done";
  if (move_.has_value()) aggregator_->RecordFailedRearrangement(outcome.record);
  move_.reset();
  Finish(std::move(outcome));
}

bool Rebalancer::busy() const {
  absl::MutexLock lock(&mu_);
  return busy_;
}

void Rebalancer::Finish(RebalanceOutcome outcome) {
  absl::MutexLock lock(&mu_);
  last_status_ =
      outcome.record.ok ? absl::OkStatus() : absl::FailedPreconditionError(outcome.record.error);
  last_ = std::move(outcome);
  ++finished_;
  busy_ = false;
}

}  // namespace moe
