// moe-coordinator: rank 0 of the cluster. Holds embeddings, attention and the KV cache, the router
// and sampling; reaches the experts on the worker ranks through the cluster exchange (MPI, or NCCL
// when every rank is on a GPU). Serves gRPC, or runs one-shot modes that mirror the
// single-process tools (logits dump, generation, benchmark), so the distributed path can be
// checked against them.
//   mpirun -np 1 moe-coordinator --model DIR [--placement F] [--expert-slots S] MODE
//       : -np W moe-worker --model DIR
//
// Main reads the flags into CoordinatorOptions and validates them before MPI starts, then
// StartCluster brings the ranks up (every collective of the start-up, in the workers' order),
// RunMode runs the mode, and EndCluster shuts the workers down.
#include <malloc.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "coordinator/coordinator_options.h"
#include "coordinator/engine/rebalancer.h"
#include "coordinator/inference/model_runner.h"
#include "coordinator/serve.h"
#include "coordinator/telemetry/load_aggregator.h"
#include "coordinator/tools/modes.h"
#include "core/base/op_timer.h"
#include "core/base/status_macros.h"
#include "core/cli/cli.h"
#include "core/exchange/cluster_exchange.h"
#include "core/mpi/cluster_setup.h"
#include "core/mpi/data_plane_setup.h"
#include "core/mpi/mpi_job.h"
#include "core/mpi/mpi_messenger.h"

ABSL_FLAG(std::string, placement, "",
          "JSON expert placement file (default: contiguous blocks of experts per worker)");
ABSL_FLAG(int, expert_slots, 0,
          "most expert slots (experts and replicas) a worker hosts per layer; a placement over it "
          "fails at start-up (0: no limit; a placement file's \"expert_slots\" must agree)");
ABSL_FLAG(double, worker_timeout_s, 10.0,
          "fail the step when a worker has not answered for this long (must exceed one step's "
          "expert time)");
ABSL_FLAG(std::string, exchange, "auto",
          "how rows move between ranks: auto (NCCL when every rank computes on a GPU of its own, "
          "else MPI), mpi (host memory), nccl (GPU memory; an error when unusable)");
ABSL_FLAG(std::string, overlap, "auto",
          "run a step's batch as two micro-batches in ping-pong, one's experts on the workers while "
          "the other's attention runs here: auto (steps of at least --overlap-min-tokens tokens, "
          "where timing both ways shows that it pays), on (every step of two sequences or more), "
          "off; with the MPI exchange only (the results are the same either way)");
ABSL_FLAG(int64_t, overlap_min_tokens, 64,
          "--overlap auto: never split a step of fewer tokens (larger steps are timed both ways)");
ABSL_FLAG(bool, bench, false, "run the benchmark through the cluster (see --bench-prompt-tokens)");
ABSL_FLAG(std::string, listen, "", "serve gRPC on HOST:PORT (port 0 picks a free one), e.g. 127.0.0.1:50051");
ABSL_FLAG(std::string, port_file, "", "write the port the server listens on to this file");
ABSL_FLAG(int, max_batch_tokens, 512, "serving: tokens per step (decode tokens + prefill chunks)");
ABSL_FLAG(int, max_running, 64, "serving: sequences in the batch at once");
ABSL_FLAG(int, max_queue, 256, "serving: waiting requests beyond which new ones get RESOURCE_EXHAUSTED");
ABSL_FLAG(int64_t, kv_cache_mb, 1024, "serving: KV cache budget for all running sequences, MiB");
ABSL_FLAG(int, max_tokens_limit, 4096, "serving: largest max_tokens a request may ask for");
ABSL_FLAG(int, max_stop_strings, 16, "serving: stop strings a request may give");
ABSL_FLAG(int, max_stop_bytes, 256, "serving: bytes of one stop string");
ABSL_FLAG(int64_t, max_prompt_bytes, 1 << 20,
          "serving: bytes of prompt text (Generate) or text to Tokenize, refused before tokenizing");
ABSL_FLAG(int, grpc_max_message_bytes, 4 << 20, "serving: largest gRPC message, either way");
ABSL_FLAG(int, grpc_max_streams, 256, "serving: concurrent calls on one client connection");
ABSL_FLAG(int, grpc_max_threads, 1024,
          "serving: calls served at once over all connections (a streaming Generate holds one "
          "while it runs); beyond it calls get RESOURCE_EXHAUSTED");
ABSL_FLAG(int, max_watch_streams, 16, "serving: WatchLoad streams open at once");
ABSL_FLAG(int, min_watch_interval_ms, 200, "serving: WatchLoad intervals below this are raised to it");
ABSL_FLAG(double, shutdown_grace_s, 30, "serving: on SIGTERM, how long running requests may finish");
ABSL_FLAG(int, telemetry_interval_ms, 500, "serving: how often each worker reports its load (a heartbeat too)");
ABSL_FLAG(double, load_window_s, 60, "serving: the sliding window of the windowed expert load");
ABSL_FLAG(std::string, telemetry_address, "",
          "serving: HOST:PORT the workers reach the coordinator's gRPC server at (default: the "
          "--listen host, or this host's name when listening on all interfaces)");
ABSL_FLAG(std::string, metrics_listen, "",
          "serving: serve Prometheus /metrics on HOST:PORT (port 0 picks a free one; empty: off)");
ABSL_FLAG(std::string, metrics_port_file, "", "serving: write the /metrics port to this file");
ABSL_FLAG(std::string, http_listen, "",
          "serving: the OpenAI-compatible HTTP API (/v1/completions, /v1/chat/completions, /v1/models, "
          "/health) on HOST:PORT (port 0 picks a free one); off when empty");
ABSL_FLAG(std::string, http_port_file, "", "serving: write the HTTP API's port to this file");
ABSL_FLAG(std::string, http_api_key_file, "",
          "serving: a file whose first line is the key HTTP API calls must send as "
          "\"Authorization: Bearer KEY\" (16+ characters); empty: no key asked");
ABSL_FLAG(
    int, http_max_threads, 128,
    "serving: HTTP generations served at once, each on a thread; complete requests beyond them "
    "wait their turn without one");
ABSL_FLAG(int, http_max_connections, 1024,
          "serving: open connections to the HTTP API at once; more are closed as they arrive");
ABSL_FLAG(int, http_max_connections_per_client, 128,
          "serving: open connections to the HTTP API from one client address at once");
ABSL_FLAG(double, http_request_timeout_s, 30,
          "serving: an HTTP request's head and body must be in this long after the server starts "
          "waiting for it (the head within 10 s); trickling bytes does not extend it");
ABSL_FLAG(std::string, served_model_name, "",
          "serving: the model's name in the HTTP API (/v1/models, requests' \"model\"); default: the "
          "model directory's name");
ABSL_FLAG(std::string, chat_template, "auto",
          "serving: the chat template of /v1/chat/completions: auto (MODEL/tokenizer_config.json's when "
          "it is a Mistral v1 one; Mistral v1, Mixtral-Instruct's, when the model gives none) or mistral-v1");
ABSL_FLAG(std::string, tls_cert, "",
          "serving: PEM certificate chain (the server's first) for TLS on the gRPC port; with "
          "--tls-key (default: plaintext)");
ABSL_FLAG(std::string, tls_key, "", "serving: PEM private key of --tls-cert");
ABSL_FLAG(std::string, tls_client_ca, "",
          "serving: PEM CA certificates; clients must present a certificate one of them signed "
          "(mutual TLS; workers authenticate with the cluster's token instead)");
ABSL_FLAG(std::string, admin_token_file, "",
          "serving: file whose first line is the token administrative calls (ResetLoad, "
          "Rebalance) must present as 'authorization: Bearer TOKEN' (default: allowed from anyone "
          "on a loopback --listen, refused elsewhere)");
ABSL_FLAG(double, rebalance_interval_s, 0,
          "serving: every this many seconds, re-place experts (replicas within --expert-slots) from "
          "the load window when worker balancedness is below --rebalance-threshold; workers load "
          "in the background and switch at one step boundary (0: only on a Rebalance request)");
ABSL_FLAG(double, rebalance_threshold, 0.95,
          "serving: periodic re-placement is skipped while worker balancedness (mean/max over the "
          "load window) is at least this");

namespace moe {
namespace {

std::atomic<bool> g_stop{false};
std::atomic<int> g_signal{0};
void OnSignal(int sig) {
  g_signal = sig;
  g_stop = true;
}

absl::StatusOr<CoordinatorOptions> OptionsFromFlags() {
  CoordinatorOptions o;
  o.model_dir = cli::ModelDir();
  o.placement_file = absl::GetFlag(FLAGS_placement);
  o.expert_slots = absl::GetFlag(FLAGS_expert_slots);
  o.device = cli::DeviceFlags();
  o.formats = cli::QuantizeFlag();
  absl::StatusOr<Transport> exchange = ParseTransport(absl::GetFlag(FLAGS_exchange));
  if (!exchange.ok()) return exchange.status();
  o.exchange = *exchange;
  o.worker_timeout_seconds = absl::GetFlag(FLAGS_worker_timeout_s);
  if (const std::string overlap = absl::GetFlag(FLAGS_overlap); overlap == "auto") {
    o.overlap.mode = OverlapPolicy::Mode::kAuto;
  } else if (overlap == "on") {
    o.overlap.mode = OverlapPolicy::Mode::kOn;
  } else if (overlap == "off") {
    o.overlap.mode = OverlapPolicy::Mode::kOff;
  } else {
    return absl::InvalidArgumentError(absl::StrCat("--overlap must be auto, on or off, got \"", overlap, "\""));
  }
  o.overlap.min_tokens = absl::GetFlag(FLAGS_overlap_min_tokens);
  if (!absl::GetFlag(FLAGS_listen).empty()) {
    o.mode = CoordinatorMode::kServe;
  } else if (cli::LogitsModeRequested()) {
    o.mode = CoordinatorMode::kLogits;
  } else if (cli::GenerateModeRequested()) {
    o.mode = CoordinatorMode::kGenerate;
  } else if (absl::GetFlag(FLAGS_bench)) {
    o.mode = CoordinatorMode::kBench;
  } else if (cli::PerplexityModeRequested()) {
    o.mode = CoordinatorMode::kPerplexity;
  } else {
    return absl::InvalidArgumentError(
        "nothing to do: give --listen (serve gRPC), --tokens and --out (logits dump), --prompt "
        "(generation), --bench or --perplexity-file");
  }
  ServeOptions& s = o.serve;
  s.listen = absl::GetFlag(FLAGS_listen);
  s.port_file = absl::GetFlag(FLAGS_port_file);
  s.shutdown_grace_seconds = absl::GetFlag(FLAGS_shutdown_grace_s);
  s.scheduler.max_batch_tokens = absl::GetFlag(FLAGS_max_batch_tokens);
  s.scheduler.max_running = absl::GetFlag(FLAGS_max_running);
  s.scheduler.max_waiting = absl::GetFlag(FLAGS_max_queue);
  s.scheduler.kv_budget_bytes = absl::GetFlag(FLAGS_kv_cache_mb) << 20;
  s.scheduler.limits.max_tokens = absl::GetFlag(FLAGS_max_tokens_limit);
  s.scheduler.limits.max_stop_strings = absl::GetFlag(FLAGS_max_stop_strings);
  s.scheduler.limits.max_stop_bytes = absl::GetFlag(FLAGS_max_stop_bytes);
  s.max_prompt_bytes = absl::GetFlag(FLAGS_max_prompt_bytes);
  s.max_message_bytes = absl::GetFlag(FLAGS_grpc_max_message_bytes);
  s.max_streams_per_connection = absl::GetFlag(FLAGS_grpc_max_streams);
  s.max_handler_threads = absl::GetFlag(FLAGS_grpc_max_threads);
  s.max_watch_streams = absl::GetFlag(FLAGS_max_watch_streams);
  s.min_watch_interval_ms = absl::GetFlag(FLAGS_min_watch_interval_ms);
  absl::StatusOr<ServerSecurity> security =
      ServerSecurity::FromFiles(absl::GetFlag(FLAGS_tls_cert), absl::GetFlag(FLAGS_tls_key),
                                absl::GetFlag(FLAGS_tls_client_ca), absl::GetFlag(FLAGS_admin_token_file));
  if (!security.ok()) return security.status();
  s.security = *std::move(security);
  s.metrics_listen = absl::GetFlag(FLAGS_metrics_listen);
  s.metrics_port_file = absl::GetFlag(FLAGS_metrics_port_file);
  s.http.listen = absl::GetFlag(FLAGS_http_listen);
  s.http_port_file = absl::GetFlag(FLAGS_http_port_file);
  s.http.max_threads = absl::GetFlag(FLAGS_http_max_threads);
  s.http.max_connections = absl::GetFlag(FLAGS_http_max_connections);
  s.http.max_connections_per_client = absl::GetFlag(FLAGS_http_max_connections_per_client);
  s.http.request_timeout_seconds = absl::GetFlag(FLAGS_http_request_timeout_s);
  if (const std::string key_file = absl::GetFlag(FLAGS_http_api_key_file); !key_file.empty()) {
    absl::StatusOr<std::string> key = ReadTokenFile("--http-api-key-file", key_file);
    if (!key.ok()) return key.status();
    s.http.api_key = *std::move(key);
  }
  // HTTPS with the gRPC port's certificate: one set of files secures both.
  s.http.tls_cert_file = absl::GetFlag(FLAGS_tls_cert);
  s.http.tls_key_file = absl::GetFlag(FLAGS_tls_key);
  s.http.tls_client_ca_file = absl::GetFlag(FLAGS_tls_client_ca);
  if (absl::Status valid = s.http.Validate(); !s.http.listen.empty() && !valid.ok()) return valid;
  s.served_model_name = absl::GetFlag(FLAGS_served_model_name);
  if (s.served_model_name.empty()) {
    std::string dir = o.model_dir;
    while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
    s.served_model_name = dir.substr(dir.rfind('/') + 1);
  }
  absl::StatusOr<ChatTemplate> chat = ChatTemplate::ForModel(absl::GetFlag(FLAGS_chat_template), o.model_dir);
  if (!chat.ok()) return chat.status();
  s.chat_template = *std::move(chat);
  o.telemetry_interval_ms = absl::GetFlag(FLAGS_telemetry_interval_ms);
  o.load_window_seconds = absl::GetFlag(FLAGS_load_window_s);
  o.telemetry_address = absl::GetFlag(FLAGS_telemetry_address);
  o.rebalance_interval_seconds = absl::GetFlag(FLAGS_rebalance_interval_s);
  o.rebalance_threshold = absl::GetFlag(FLAGS_rebalance_threshold);
  if (absl::Status valid = o.Validate(); !valid.ok()) return valid;
  return o;
}

// What the start-up makes, in the order it is torn down (reverse).
struct Cluster {
  int n_ranks = 0;
  // The placement as every rank received it; its failure means the workers have already left.
  absl::StatusOr<ExpertPlacement> placement = absl::UnknownError("not shared yet");
  // The placement in force (the start-up one until a re-placement commits).
  std::unique_ptr<PlacementRegistry> placements;
  std::unique_ptr<ModelWeights> weights;
  std::unique_ptr<kernels::Backend> backend;
  std::unique_ptr<Messenger> messenger;  // MPI: the control messages, and rows on host memory
  std::unique_ptr<DataPlane> plane;
  ExchangeObservers exchange_observers;  // the exchange's: telemetry and the routing trace
  std::unique_ptr<WorkerLiveness> liveness;  // serving only: from the workers' report streams
  std::unique_ptr<LoadAggregator> telemetry;
  std::unique_ptr<ClusterExchange> exchange;
  std::unique_ptr<Rebalancer> rebalancer;  // serving only
  OpTimes times;  // stage times, --bench only: on a GPU they wait for the device after every stage
  std::unique_ptr<ModelRunner> runner;
  std::unique_ptr<RoutingTraceWriter> trace;
  std::vector<RankWeights> rank_weights;  // from the ranks' start-up reports, for GetModelInfo
  // Workers wait for the telemetry endpoint after start-up: every path sends it exactly once.
  std::string worker_token = NewTelemetryToken();
  bool endpoint_sent = false;

  // certificate: the PEM the server presents, which the workers pin; empty: plaintext.
  void SendEndpoint(const std::string& address, int interval_ms, const std::string& certificate = "") {
    if (endpoint_sent) return;
    endpoint_sent = true;
    ShareTelemetryEndpoint(TelemetryEndpoint{address, interval_ms, worker_token, certificate});
  }
};

// Brings every rank up: shares the placement, loads the attention side, gathers the ranks'
// reports, agrees on the data plane, and builds the exchange and the forward pass. The
// collectives happen whatever fails in between, so the workers never wait for one that is not
// coming; the first failure is returned.
absl::Status StartCluster(const CoordinatorOptions& o, Cluster* cluster) {
  const auto start = std::chrono::steady_clock::now();
  const int n_workers = cluster->n_ranks - 1;

  // 1. Placement, shared with every worker (they load only their experts from it).
  absl::StatusOr<ExpertPlacement> placement = [&]() -> absl::StatusOr<ExpertPlacement> {
    absl::StatusOr<MixtralConfig> config = LoadMixtralConfig(o.model_dir);
    if (!config.ok()) return config.status();
    if (!o.placement_file.empty()) {
      return ExpertPlacement::FromFile(o.placement_file, config->num_hidden_layers,
                                       config->num_local_experts, n_workers, o.expert_slots);
    }
    absl::StatusOr<ExpertPlacement> contiguous = ExpertPlacement::Contiguous(
        config->num_hidden_layers, config->num_local_experts, n_workers);
    if (contiguous.ok()) MOE_RETURN_IF_ERROR(contiguous->CheckSlotBudget(o.expert_slots));
    return contiguous;
  }();
  cluster->placement = SharePlacement(&placement);
  if (!placement.ok()) return placement.status();
  // The slot budget the telemetry reports and the rebalancer plans within: the placement file's,
  // else --expert-slots.
  const int expert_slots =
      cluster->placement->expert_slots() > 0 ? cluster->placement->expert_slots() : o.expert_slots;
  std::printf("moe-coordinator: %d workers; expert placement:\n%s", n_workers,
              cluster->placement->Describe().c_str());

  // 2. The attention side of the model, no expert, on this rank's device; a failure is reported
  // with the other ranks', like a missing file.
  LoadOptions load;
  load.owns_expert = [](int, int) { return false; };
  load.formats = o.formats;
  absl::StatusOr<std::unique_ptr<ModelWeights>> weights = LoadModelWeights(o.model_dir, load);
  if (weights.ok()) {
    absl::StatusOr<std::unique_ptr<kernels::Backend>> made = cli::MakeBackend(o.device);
    if (made.ok()) {
      cluster->backend = *std::move(made);
    } else {
      weights = made.status();
    }
  }
  const std::vector<RankReport> reports = GatherRankReports(ReportLoad(
      0, 0, weights, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(),
      o.device.cpu_numerics));
  std::printf("moe-coordinator: ranks started:\n%s", FormatRankReports(reports).c_str());
  for (const RankReport& r : reports) {
    cluster->rank_weights.push_back(
        RankWeights{r.rank, r.weights, r.held_bytes, r.mapped_bytes, r.resident_bytes});
  }
  std::fflush(stdout);

  // 3. The data plane, agreed by every rank. With none (its set-up failed) the shutdown still
  // goes over MPI.
  std::string transport_note;
  cluster->messenger = NewMpiMessenger();
  absl::StatusOr<std::unique_ptr<DataPlane>> data_plane = ConnectDataPlane(
      o.exchange, cluster->backend.get(), cluster->messenger.get(), &transport_note);
  if (data_plane.ok()) {
    std::printf("moe-coordinator: exchange rows over %s\n", transport_note.c_str());
    std::fflush(stdout);
  }
  cluster->plane =
      data_plane.ok() ? *std::move(data_plane) : NewHostDataPlane(cluster->messenger.get());

  // 4. Load telemetry (serving only): fed by the routing and the exchanges, and by the workers'
  // reports once they know where to send them.
  if (o.mode == CoordinatorMode::kServe && weights.ok()) {
    const MixtralConfig& c = (*weights)->config;
    LoadAggregatorOptions t;
    t.n_layers = c.num_hidden_layers;
    t.n_experts = c.num_local_experts;
    t.top_k = c.num_experts_per_tok;
    t.placement = &*cluster->placement;
    t.expert_slots = expert_slots;
    t.window_seconds = o.load_window_seconds;
    t.report_interval_seconds = o.telemetry_interval_ms / 1e3;
    cluster->liveness = std::make_unique<WorkerLiveness>(n_workers, t.report_interval_seconds);
    t.liveness = cluster->liveness.get();
    cluster->telemetry = std::make_unique<LoadAggregator>(std::move(t));
  }

  // 5. The exchange. One-shot modes stop at the next exchange after a signal; a server drains its
  // requests gracefully instead (Serve watches the flag), so its exchanges must keep running.
  ClusterExchangeOptions exchange;
  exchange.worker_timeout_seconds = o.worker_timeout_seconds;
  exchange.stop_requested = o.mode == CoordinatorMode::kServe ? nullptr : &g_stop;
  exchange.observer = &cluster->exchange_observers;  // the trace joins it once it is open (6.)
  cluster->placements = PlacementRegistry::Borrowing(&*cluster->placement);
  if (cluster->telemetry != nullptr) {
    cluster->placements->Subscribe(cluster->telemetry.get());
    cluster->exchange_observers.Add(cluster->telemetry.get());
    exchange.telemetry_epoch = cluster->telemetry->epoch();
    exchange.liveness = cluster->liveness.get();
  }
  cluster->exchange =
      std::make_unique<ClusterExchange>(cluster->placements.get(), cluster->messenger.get(),
                                        cluster->plane.get(), cluster->backend.get(), exchange);
  if (absl::Status s = CheckRankReports(reports); !s.ok()) return s;
  if (!data_plane.ok()) return data_plane.status();
  cluster->weights = *std::move(weights);

  // 6. The forward pass through the cluster, and what observes it.
  absl::StatusOr<std::unique_ptr<ModelRunner>> runner = ModelRunner::Create(
      cluster->weights.get(), cluster->exchange.get(), cluster->backend.get(),
      o.mode == CoordinatorMode::kBench ? &cluster->times : nullptr);
  if (!runner.ok()) return runner.status();
  cluster->runner = *std::move(runner);
  cluster->runner->set_overlap(o.overlap);
  absl::StatusOr<std::unique_ptr<RoutingTraceWriter>> trace =
      cli::OpenRoutingTrace(cluster->runner.get(), &*cluster->placement, &cluster->exchange_observers);
  if (!trace.ok()) return trace.status();
  cluster->trace = *std::move(trace);
  if (cluster->telemetry != nullptr) {
    cluster->runner->AddRoutingObserver(cluster->telemetry.get());
    RebalanceOptions rebalance;
    rebalance.interval_seconds = o.rebalance_interval_seconds;
    rebalance.threshold = o.rebalance_threshold;
    rebalance.slots_per_worker = expert_slots;
    cluster->rebalancer = std::make_unique<Rebalancer>(
        cluster->telemetry.get(), cluster->exchange.get(), cluster->placements.get(), n_workers,
        cluster->weights->config.num_local_experts, rebalance);
  }
  return absl::OkStatus();
}

absl::Status RunMode(const CoordinatorOptions& o, Cluster* cluster) {
  ModelRunner* runner = cluster->runner.get();
  switch (o.mode) {
    case CoordinatorMode::kServe: {
      MOE_ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tokenizer,
                           Tokenizer::Load(cli::DefaultTokenizerPath(o.model_dir)));
      ServeParts parts;
      parts.runner = runner;
      parts.tokenizer = tokenizer.get();
      parts.placements = cluster->placements.get();
      parts.quantize = o.formats.any_quantized() ? FormatSpec(o.formats) : "";
      parts.rank_weights = cluster->rank_weights;
      parts.telemetry = cluster->telemetry.get();
      parts.liveness = cluster->liveness.get();
      parts.rebalancer = cluster->rebalancer.get();
      parts.worker_token = cluster->worker_token;
      parts.on_listening = [&](int port) {
        cluster->SendEndpoint(WorkerTelemetryAddress(o, port), o.telemetry_interval_ms,
                              o.serve.security.LeafCertificatePem());
      };
      const absl::Status served = Serve(o.serve, std::move(parts), g_stop);
      if (served.ok() && g_stop.load()) {
        std::fprintf(stderr, "moe-coordinator: stopped by signal %d\n", g_signal.load());
      }
      return served;
    }
    case CoordinatorMode::kLogits:
      cluster->SendEndpoint("", o.telemetry_interval_ms);
      return cli::RunLogitsMode(runner);
    case CoordinatorMode::kGenerate:
      cluster->SendEndpoint("", o.telemetry_interval_ms);
      return cli::RunGenerateMode(runner, o.model_dir);
    case CoordinatorMode::kBench:
      cluster->SendEndpoint("", o.telemetry_interval_ms);
      return cli::RunBenchMode(runner, *cluster->weights, &cluster->times, &cluster->exchange->stats());
    case CoordinatorMode::kPerplexity:
      cluster->SendEndpoint("", o.telemetry_interval_ms);
      return cli::RunPerplexityMode(runner, o.model_dir);
  }
  return absl::InternalError("unknown mode");
}

// Ends the job: a clean shutdown when every worker can still hear it, MPI_Abort when one may be
// dead or out of step (it would never receive the shutdown). The data plane goes before
// MPI_Finalize: NCCL's finalize waits for the workers' (a barrier among a host's ranks), and
// Open MPI's finalize waits for the workers' too.
int EndCluster(absl::Status status, const CoordinatorOptions& o, Cluster* cluster) {
  if (!cluster->placement.ok()) {  // the workers left when the placement failed
    cli::Fail(status);
    FinishMpiJob();
    return 1;
  }
  cluster->SendEndpoint("", o.telemetry_interval_ms);
  if (cluster->trace != nullptr) {
    if (absl::Status closed = cluster->trace->Close(); status.ok()) status = closed;  // a broken trace is an error
  }
  int code = 0;
  if (absl::IsCancelled(status)) {
    code = 128 + g_signal.load();
    std::fprintf(stderr, "moe-coordinator: stopped by signal %d; shutting the workers down\n",
                 g_signal.load());
  } else if (!status.ok()) {
    code = cli::Fail(status);
  }
  if (absl::IsUnavailable(status) || absl::IsInternal(status)) {
    std::fflush(stderr);
    AbortMpiJob(1);
  }
  if (cluster->exchange != nullptr) {
    if (absl::Status left = cluster->exchange->Shutdown(); !left.ok()) {
      // A worker that cannot take part in the shutdown would hold MPI_Finalize forever.
      std::fprintf(stderr, "moe-coordinator: %s; aborting the job\n", std::string(left.message()).c_str());
      std::fflush(stderr);
      AbortMpiJob(1);
    }
  }
  // Every worker acknowledged; should one still stall the finalize (stopped in between), the job
  // ends anyway: mpirun ends the others when rank 0 exits without finalizing.
  std::thread([] {
    std::this_thread::sleep_for(std::chrono::seconds(30));
    std::fprintf(stderr, "moe-coordinator: MPI_Finalize did not return within 30 s; exiting\n");
    std::fflush(stderr);
    std::_Exit(1);
  }).detach();
  cluster->plane.reset();
  FinishMpiJob();
  return code;
}

int Main(int argc, char** argv) {
  // Request bodies (up to megabytes each) come and go with clients: a fixed mmap threshold keeps
  // glibc from raising it after the first big free, so each of them is returned to the system
  // when freed instead of lingering in the heap after a burst.
  mallopt(M_MMAP_THRESHOLD, 256 << 10);
  mallopt(M_TRIM_THRESHOLD, 1 << 20);
  cli::Init(
      argc, argv,
      "mpirun -np 1 moe-coordinator --model DIR [--placement F] [--expert-slots S] "
      "(--listen HOST:PORT | --tokens 1,2,3 --out F.npy [--incremental] | --prompt TEXT ... | "
      "--bench) : "
      "-np W moe-worker --model DIR");
  // Before MPI: a bad flag ends this process at once, and mpirun then ends the job.
  const absl::StatusOr<CoordinatorOptions> options = OptionsFromFlags();
  if (!options.ok()) return cli::Fail(options.status());

  const MpiJob job = StartMpiJob(&argc, &argv);
  const int rank = job.rank, size = job.size;
  if (rank != 0 || size < 2) {
    cli::Fail(absl::FailedPreconditionError(
        rank != 0 ? "moe-coordinator must be rank 0: list it first in the mpirun command"
                  : "no workers: launch at least one moe-worker after the coordinator (see scripts/launch.sh)"));
    AbortMpiJob(1);
  }
  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  Cluster cluster;
  cluster.n_ranks = size;
  absl::Status status = StartCluster(*options, &cluster);
  if (status.ok()) status = RunMode(*options, &cluster);
  return EndCluster(status, *options, &cluster);
}

}  // namespace
}  // namespace moe

int main(int argc, char** argv) { return moe::Main(argc, argv); }
