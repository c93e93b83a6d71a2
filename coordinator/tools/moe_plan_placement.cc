// moe-plan-placement: an expert placement (with replicas of hot experts) from measured loads,
// written as a placement file for `moe-coordinator --placement`; prints the predicted per-worker
// load and balancedness of each layer before (the current placement, or the coordinator's
// contiguous default) and after, and how many experts move.
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "coordinator/placement/placement_planner.h"
#include "coordinator/telemetry/routing_trace_reader.h"
#include "core/base/status_macros.h"
#include "core/cli/cli.h"
#include "core/placement/expert_placement.h"
#include "nlohmann/json.hpp"

ABSL_FLAG(std::string, loads, "",
          "JSON file {\"loads\": [[token-choices per expert], ... per layer]}");
ABSL_FLAG(std::string, trace, "",
          "routing trace (--routing-trace) to count the loads from instead of --loads");
ABSL_FLAG(int, workers, 0, "worker ranks 1..W");
ABSL_FLAG(int, expert_slots, 0,
          "expert slots per worker per layer (0: the current placement's \"expert_slots\", else "
          "ceil(E / W) + 1, one spare slot per worker for a replica)");
ABSL_FLAG(std::string, current, "",
          "today's placement file, to start from and to keep experts where they are");
ABSL_FLAG(double, keep_within, 0.0,
          "accept a busiest-worker load up to this fraction above the best found "
          "if fewer experts move from the current placement (0.02 = 2%)");
ABSL_FLAG(bool, baseline, false,
          "the EPLB baseline only (replicate + pack), without the local search");
ABSL_FLAG(std::string, out, "", "write the placement here (JSON with \"expert_slots\")");

namespace moe {
namespace {

using Json = nlohmann::json;

absl::StatusOr<Json> ReadJson(const std::string& path, const char* what) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read the ", what, " file ", path));
  std::stringstream text;
  text << in.rdbuf();
  Json j = Json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object())
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a JSON object"));
  return j;
}

absl::StatusOr<std::vector<std::vector<double>>> ReadLoads(const std::string& path) {
  MOE_ASSIGN_OR_RETURN(Json j, ReadJson(path, "loads"));
  const Json& rows = j["loads"];
  if (!rows.is_array() || rows.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": expected \"loads\": [[...per expert...], ...per layer]"));
  }
  std::vector<std::vector<double>> loads;
  for (size_t l = 0; l < rows.size(); ++l) {
    if (!rows[l].is_array())
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": loads of layer ", l, " is not a list"));
    std::vector<double> row;
    for (size_t e = 0; e < rows[l].size(); ++e) {
      if (!rows[l][e].is_number()) {
        return absl::InvalidArgumentError(absl::StrCat(path, ": layer ", l, " expert ", e, " is ",
                                                       rows[l][e].dump(), ", not a number"));
      }
      row.push_back(rows[l][e].get<double>());
    }
    loads.push_back(std::move(row));
  }
  return loads;
}

std::string Loads(const LayerPlan& p) {
  std::string out;
  for (double x : p.worker_load) out += absl::StrFormat(" %8.1f", x);
  return out;
}

// Token-choices per (layer, expert) counted from a routing trace, as scripts/plan_placement.py
// counts them.
absl::StatusOr<std::vector<std::vector<double>>> LoadsFromTrace(const std::string& path) {
  MOE_ASSIGN_OR_RETURN(RoutingTrace trace, RoutingTrace::Open(path));
  std::vector<std::vector<double>> loads;
  for (const std::vector<int64_t>& layer : trace.ExpertCounts()) loads.emplace_back(layer.begin(), layer.end());
  return loads;
}

int Run() {
  const std::string trace_path = absl::GetFlag(FLAGS_trace);
  const std::string loads_path = trace_path.empty() ? absl::GetFlag(FLAGS_loads) : trace_path;
  const int n_workers = absl::GetFlag(FLAGS_workers);
  if (absl::GetFlag(FLAGS_loads).empty() == trace_path.empty())
    return cli::Fail(absl::InvalidArgumentError("give one of --loads FILE.json or --trace FILE"));
  if (n_workers < 1)
    return cli::Fail(absl::InvalidArgumentError("--workers W (at least 1) is required"));
  auto loads = trace_path.empty() ? ReadLoads(loads_path) : LoadsFromTrace(trace_path);
  if (!loads.ok()) return cli::Fail(loads.status());
  const int n_layers = static_cast<int>(loads->size());
  const int n_experts = loads->empty() ? 0 : static_cast<int>((*loads)[0].size());
  if (n_experts < 1)
    return cli::Fail(
        absl::InvalidArgumentError(absl::StrCat(loads_path, ": layer 0 has no experts")));

  // The placement the cluster runs now, read and validated as the coordinator reads it.
  const std::string current_path = absl::GetFlag(FLAGS_current);
  absl::StatusOr<ExpertPlacement> placement =
      current_path.empty()
          ? ExpertPlacement::Contiguous(n_layers, n_experts, n_workers)
          : ExpertPlacement::FromFile(current_path, n_layers, n_experts, n_workers);
  if (!placement.ok()) return cli::Fail(placement.status());
  struct {
    std::vector<std::vector<ExpertSlot>> slots;  // [L][slot]
    int expert_slots = 0;                        // the file's budget, 0 when it has none
  } current;
  for (int l = 0; l < n_layers; ++l) current.slots.push_back(placement->slots(l));
  current.expert_slots = placement->expert_slots();
  const std::string before_name =
      current_path.empty() ? "contiguous blocks (the coordinator's default)" : current_path;

  PlannerOptions options;
  options.n_workers = n_workers;
  options.slots_per_worker = absl::GetFlag(FLAGS_expert_slots);
  if (options.slots_per_worker == 0) {
    options.slots_per_worker =
        current.expert_slots > 0 ? current.expert_slots
                                 : std::min(n_experts, (n_experts + n_workers - 1) / n_workers + 1);
  }
  options.improve = !absl::GetFlag(FLAGS_baseline);
  options.keep_within = absl::GetFlag(FLAGS_keep_within);
  if (auto s = options.Validate(n_experts); !s.ok()) return cli::Fail(s);

  auto before = EvaluatePlacement(*loads, current.slots, n_workers);
  if (!before.ok()) return cli::Fail(before.status());
  // Without --current the cluster runs the contiguous default: moves are counted against it.
  auto plan = PlanPlacement(*loads, options, current.slots);
  if (!plan.ok()) return cli::Fail(plan.status());

  std::printf("%d layers, %d experts, %d workers, %d expert slots per worker per layer%s\n",
              n_layers, n_experts, n_workers, options.slots_per_worker,
              options.improve ? "" : " (EPLB baseline only)");
  std::printf(
      "before: %s\npredicted token-choices per worker (a replicated expert's split evenly)\n",
      before_name.c_str());
  std::string head;
  for (int w = 1; w <= n_workers; ++w) head += absl::StrFormat(" %8s", absl::StrCat("w", w));
  std::printf("layer  when  %s    bal  replicas  moved\n", head.c_str());
  for (int l = 0; l < n_layers; ++l) {
    const LayerPlan &b = before->layers[l], &a = plan->layers[l];
    std::printf("%5d  before%s  %5.3f  %8d\n", l, Loads(b).c_str(), b.balancedness, b.replicas);
    std::printf("%5s  after %s  %5.3f  %8d  %5d\n", "", Loads(a).c_str(), a.balancedness,
                a.replicas, a.moved_experts);
  }
  std::printf(
      "all layers: balancedness %.3f before, %.3f after; %d experts moved (%d slots to load)\n",
      before->balancedness, plan->balancedness, plan->moved_experts, plan->moved_slots);

  if (const std::string out = absl::GetFlag(FLAGS_out); !out.empty()) {
    std::vector<std::vector<ExpertSlot>> slots;
    for (const LayerPlan& layer : plan->layers) slots.push_back(layer.slots);
    absl::StatusOr<ExpertPlacement> placement = ExpertPlacement::FromSlots(std::move(slots), n_experts, n_workers);
    if (!placement.ok()) return cli::Fail(placement.status());
    std::ofstream f(out);
    f << placement->ToJson(options.slots_per_worker);
    f.close();
    if (!f) return cli::Fail(absl::InternalError(absl::StrCat("cannot write ", out)));
    std::printf("wrote %s\n", out.c_str());
  }
  return 0;
}

}  // namespace
}  // namespace moe

int main(int argc, char** argv) {
  moe::cli::Init(
      argc, argv,
      "moe-plan-placement (--loads LOADS.json | --trace FILE) --workers W [--expert-slots S] [--current P.json] "
      "[--keep-within F] [--baseline] [--out P.json]");
  return moe::Run();
}
