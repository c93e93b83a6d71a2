// Load telemetry as plain data: what a worker reports and what the coordinator's snapshot holds.
// The engine, the aggregator, the recorder and the Prometheus page use these; only the gRPC layer
// (coordinator/server/telemetry_proto.*, worker/telemetry_reporter.*) turns them into the
// moe.v1 messages of proto/moe/v1/telemetry.proto, which has one field for each field here.
//
// Units: token counts are token-choices (a token routed to its top-k experts counts once for each
// of them, so a layer's expert counts sum to tokens x top_k); times are seconds; bytes are bytes.
// "Since reset" means since the server started or since the last ResetLoad, whichever is later.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/placement/expert_placement.h"

namespace moe {

// Imbalance of a set of loads x_1..x_n (a layer's experts, or its workers), in the forms other
// serving systems print, computed by the coordinator from its counts. An all-zero set
// is perfectly balanced: balancedness 1, ratio 0, CV 0. All zero here means "not computed", as in
// the proto.
struct LoadImbalance {
  double mean = 0;
  double max = 0;
  double balancedness = 0;     // mean / max, in (0, 1]; 1 = perfect (vLLM, SGLang EPLB logs)
  double imbalance_ratio = 0;  // (max - mean) / mean; 0 = perfect (TensorRT-LLM load report)
  double cv = 0;               // population standard deviation / mean; 0 = perfect
};

// Temporal locality of routing (Mixtral paper, Table 5): over consecutive token pairs (positions
// p and p + 1 of one sequence), how often the second token's first choice repeats the first's and
// how often their chosen sets share an expert, beside what uniform random routing would give.
struct RoutingLocality {
  int64_t pairs = 0;                     // consecutive token pairs compared
  int64_t first_choice_repeats = 0;      // pairs whose first choice is the same expert
  int64_t set_overlaps = 0;              // pairs whose top-k sets share at least one expert
  double first_choice_repeat_ratio = 0;  // first_choice_repeats / pairs (0 without pairs)
  double set_overlap_ratio = 0;          // set_overlaps / pairs (0 without pairs)
  double chance_first_choice = 0;        // 1 / E
  double chance_set_overlap = 0;         // 1 - C(E - k, k) / C(E, k)
};

// One layer of the snapshot, counted by the coordinator from the routing.
struct LayerLoad {
  int layer = 0;
  std::vector<int64_t> expert_tokens;         // [E] token-choices per expert since reset
  std::vector<int64_t> expert_window_tokens;  // [E] the same over the sliding window
  std::vector<int64_t> worker_tokens;     // [W] token-choices sent to each worker (index rank - 1)
  LoadImbalance expert_imbalance;         // over expert_tokens
  LoadImbalance expert_window_imbalance;  // over expert_window_tokens
  LoadImbalance worker_imbalance;         // over worker_tokens
  RoutingLocality locality;
  double straggler_seconds = 0;  // summed over this layer's exchanges (LoadSnapshot says how)
};

// One (layer, expert) as the worker hosting it counted it.
struct ExpertLoad {
  int layer = 0;
  int expert = 0;
  int64_t tokens = 0;       // rows the worker ran through this expert
  double busy_seconds = 0;  // time the worker spent in this expert's SwiGLU
};

// What a worker streams to the coordinator every report interval. The counters are totals since
// the worker zeroed them for `epoch`, so a lost report loses nothing.
struct WorkerReport {
  int rank = 0;                      // MPI rank (1..W)
  uint32_t epoch = 0;                // the telemetry epoch of the last step it answered
  uint64_t sequence = 0;             // 1, 2, 3, ... per worker: orders reports, spots stale ones
  std::string host;                  // the worker's host name
  int64_t exchanges = 0;             // layer-steps it answered
  int64_t last_step_id = 0;          // the step id of the last one
  double compute_seconds = 0;        // running experts
  double exchange_wait_seconds = 0;  // inside a step, waiting for rows or for outputs to leave
  double idle_seconds = 0;           // between steps, waiting for the next one
  int64_t bytes_in = 0;              // dispatch received (counts, ids, rows)
  int64_t bytes_out = 0;             // outputs returned (reply headers and rows)
  std::vector<ExpertLoad> experts;   // every (layer, expert) it hosts, in placement order
  uint32_t placement_epoch = 1;      // the placement it serves (1 at start-up, +1 per re-placement)
};

// One worker in the snapshot: what the coordinator routed to it, and its latest report.
struct WorkerLoad {
  int rank = 0;  // MPI rank (1..W)
  // Counted by the coordinator as it dispatches.
  int64_t routed_tokens = 0;  // token-choices sent to this worker, all layers
  // From the worker's reports (they lag by at most one report interval).
  bool alive = false;                // a report arrived within 3 intervals (at least 1 s)
  double seconds_since_report = -1;  // -1 when none ever arrived
  int64_t reports = 0;               // reports received since start (not since reset)
  std::string host;
  uint32_t placement_epoch = 0;  // the placement its latest report says it serves (0: none yet)
  // Zero until the worker reports from the current epoch:
  int64_t reported_tokens = 0;       // rows it ran, all layers and experts
  int64_t exchanges = 0;             // layer-steps it answered
  double compute_seconds = 0;        // running experts
  double exchange_wait_seconds = 0;  // inside steps, waiting for rows or for outputs to leave
  double idle_seconds = 0;           // between steps
  int64_t bytes_in = 0;              // dispatch received
  int64_t bytes_out = 0;             // outputs returned
  std::vector<ExpertLoad> experts;   // every (layer, expert) it hosts, as its report lists them
};

// One live re-placement (the Rebalancer's), as telemetry shows it. Balancedness is the worker
// balancedness over all layers (sum of means / sum of maxima).
struct Rearrangement {
  bool ok = false;
  std::string error;                     // why it failed (the old placement stayed)
  std::string trigger;                   // "interval" or "request"
  uint32_t epoch = 0;                    // the placement epoch it made (ok) or was to make
  double balancedness_before = 0;        // measured since the last reset, under the old placement
  double planned_from_balancedness = 0;  // the old placement on the planner's loads (the window)
  double predicted_balancedness = 0;     // the plan on the same loads
  int moved_slots = 0;                   // (rank, expert) slots the old placement lacked
  int experts_loaded = 0;                // what the workers loaded for it
  double load_seconds = 0;               // the slowest worker's background load
  double switch_seconds = 0;  // the commit round trip, the only time serving paused for it
  double total_seconds = 0;   // from the decision to the switch (or the failure)
};

// The placement in force and how it came to be.
struct PlacementInfo {
  uint32_t epoch = 1;                          // 1 at start-up, +1 per re-placement
  int expert_slots = 0;                        // the slot budget per worker per layer (0: none)
  std::vector<std::vector<ExpertSlot>> slots;  // [layer][slot] the placement in force
  int64_t rearrangements = 0;                  // re-placements done
  int64_t failed_rearrangements = 0;           // tried and given up (old placement kept)
  bool in_progress = false;                    // workers are loading a plan now
  bool has_last = false;
  Rearrangement last;  // the latest, done or failed
};

// One workload label (GenerateRequest.label) since reset. The aggregator tracks a bounded number
// of labels (LabelLoads::kMaxLabels); requests under later ones are pooled under "(other)".
struct LabelLoad {
  std::string label;                   // "" for requests without one; "(other)" past the bound
  int64_t requests = 0;                // admitted since reset
  int64_t prompt_tokens = 0;           // of those requests
  int64_t generated_tokens = 0;        // tokens routed while decoding (sampled ones fed back)
  std::vector<int64_t> expert_tokens;  // [layers * E] token-choices, index layer * E + expert
};

// The sliding window (--load-window-s) of the figures that LoadSnapshot gives since reset: the same
// ring of buckets as LayerLoad::expert_window_tokens, so all window figures cover the same steps.
struct WindowLoad {
  int64_t steps = 0;               // forward steps in the window
  int64_t tokens = 0;              // tokens through the model in the window
  RoutingLocality locality;        // the pairs of all layers together
  LoadImbalance worker_imbalance;  // over all layers, as LoadSnapshot::worker_imbalance
  double straggler_seconds = 0;    // as LoadSnapshot::straggler_seconds
  double exchange_seconds = 0;
  int64_t exchanges = 0;
};

// The coordinator's whole picture at one moment: what GetLoad, WatchLoad, moe-cli load and the
// Prometheus endpoint show.
// What /metrics exports as counters (*_total): LoadSnapshot's since-reset figures summed over
// every reset since start, so they never go down. A worker's figures lose only what it counted
// after its last report before a reset (at most one report interval).
struct LoadCounters {
  std::vector<std::vector<int64_t>> expert_tokens;  // [layer][expert]
  std::vector<int64_t> locality_pairs;              // [layer]
  std::vector<double> straggler_seconds;            // [layer]
  double exchange_seconds = 0;
  int64_t exchanges = 0;
  std::vector<WorkerLoad> workers;  // [num_workers]: rank and the counting fields only
  std::vector<LabelLoad> labels;    // requests, prompt and generated tokens (no expert_tokens)
};

struct LoadSnapshot {
  uint32_t epoch = 0;         // 1 at start, +1 per ResetLoad
  double uptime_seconds = 0;  // since the aggregator was made
  double seconds_since_reset = 0;
  double window_seconds = 0;  // the sliding window's length (--load-window-s)
  int num_layers = 0;
  int num_experts = 0;            // per layer
  int top_k = 0;                  // experts each token is routed to
  int num_workers = 0;            // 0: a single process
  int64_t steps = 0;              // forward steps (batches) since reset
  int64_t tokens = 0;             // tokens through the model since reset (prompt and generated)
  std::vector<LayerLoad> layers;  // [num_layers]
  // Over all layers: sum of the layers' means / sum of their maxima (each layer waits for its own
  // maximum, so this is the share of expert work balancing could remove), and the CV of the
  // layer-summed loads.
  LoadImbalance expert_imbalance;
  LoadImbalance worker_imbalance;
  RoutingLocality locality;         // the pairs of all layers together
  std::vector<WorkerLoad> workers;  // [num_workers], by rank
  // Straggler cost: for every exchange (one layer of one step), the slowest worker's expert time
  // minus the mean over workers, i.e. how long the average worker sat waiting for the slowest.
  double straggler_seconds = 0;
  double exchange_seconds = 0;    // the coordinator's wall time in exchanges, for scale
  int64_t exchanges = 0;          // one per layer per step
  PlacementInfo placement;        // not reset by ResetLoad
  std::vector<LabelLoad> labels;  // by first appearance since reset
  WindowLoad window;
  LoadCounters lifetime;  // since start, whatever the resets
};

}  // namespace moe
