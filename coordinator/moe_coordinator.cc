// moe-coordinator: rank 0 of the cluster. Holds embeddings, attention and the KV cache, the router
// and sampling; reaches the experts on the worker ranks through the cluster exchange (MPI, or NCCL
// when every rank is on a GPU). Serves gRPC, or runs one-shot modes that mirror the
// single-process tools (logits dump, generation, benchmark), so the distributed path can be
// checked against them.
//   mpirun -np 1 moe-coordinator --model DIR [--placement F] MODE : -np W moe-worker --model DIR
#include <mpi.h>

#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstring>
#include <chrono>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "coordinator/model_runner.h"
#include "coordinator/server/serve.h"
#include "coordinator/telemetry/load_aggregator.h"
#include "coordinator/tools/cli.h"
#include "coordinator/tools/modes.h"
#include "core/cluster_setup.h"
#include "core/cluster_exchange.h"
#include "core/data_plane.h"
#include "core/op_timer.h"

ABSL_FLAG(std::string, placement, "",
          "JSON expert placement file (default: contiguous blocks of experts per worker)");
ABSL_FLAG(double, worker_timeout_s, 10.0,
          "fail the step when a worker has not answered for this long (must exceed one step's "
          "expert time)");
ABSL_FLAG(std::string, exchange, "auto",
          "how rows move between ranks: auto (NCCL when every rank computes on a GPU of its own, "
          "else MPI), mpi (host memory), nccl (GPU memory; an error when unusable)");
ABSL_FLAG(bool, bench, false, "run the benchmark through the cluster (see --bench-prompt-tokens)");
ABSL_FLAG(std::string, listen, "", "serve gRPC on HOST:PORT (port 0 picks a free one), e.g. 127.0.0.1:50051");
ABSL_FLAG(std::string, port_file, "", "write the port the server listens on to this file");
ABSL_FLAG(int, max_batch_tokens, 512, "serving: tokens per step (decode tokens + prefill chunks)");
ABSL_FLAG(int, max_running, 64, "serving: sequences in the batch at once");
ABSL_FLAG(int, max_queue, 256, "serving: waiting requests beyond which new ones get RESOURCE_EXHAUSTED");
ABSL_FLAG(int64_t, kv_cache_mb, 1024, "serving: KV cache budget for all running sequences, MiB");
ABSL_FLAG(int, max_tokens_limit, 4096, "serving: largest max_tokens a request may ask for");
ABSL_FLAG(double, shutdown_grace_s, 30, "serving: on SIGTERM, how long running requests may finish");
ABSL_FLAG(int, telemetry_interval_ms, 500, "serving: how often each worker reports its load (a heartbeat too)");
ABSL_FLAG(double, load_window_s, 60, "serving: the sliding window of the windowed expert load");
ABSL_FLAG(std::string, telemetry_address, "",
          "serving: HOST:PORT the workers reach the coordinator's gRPC server at (default: the "
          "--listen host, or this host's name when listening on all interfaces)");
ABSL_FLAG(std::string, metrics_listen, "",
          "serving: serve Prometheus /metrics on HOST:PORT (port 0 picks a free one; empty: off)");
ABSL_FLAG(std::string, metrics_port_file, "", "serving: write the /metrics port to this file");

namespace moe {
namespace {

std::atomic<bool> g_stop{false};
std::atomic<int> g_signal{0};
void OnSignal(int sig) {
  g_signal = sig;
  g_stop = true;
}

// The address workers report telemetry to: the listen host unless it is a wildcard, which other
// hosts cannot dial; then this host's name.
std::string TelemetryAddress(const std::string& listen, int port) {
  if (!absl::GetFlag(FLAGS_telemetry_address).empty()) return absl::GetFlag(FLAGS_telemetry_address);
  std::string host = listen.substr(0, listen.rfind(':'));
  if (host.empty() || host == "0.0.0.0" || host == "[::]" || host == "::") {
    char name[256] = {};
    host = gethostname(name, sizeof(name) - 1) == 0 ? name : "localhost";
  }
  return absl::StrCat(host, ":", port);
}

// Ends the job after an error: a clean shutdown when every worker can still hear it, MPI_Abort
// when one may be dead or out of step (it would never receive the shutdown).
// The data plane goes before MPI_Finalize: NCCL's finalize waits for the workers' (a barrier
// among a host's ranks), and Open MPI's finalize waits for the workers' too.
int Exit(const absl::Status& status, ClusterExchange* exchange, std::unique_ptr<DataPlane>* plane) {
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
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  if (exchange != nullptr) exchange->Shutdown();
  plane->reset();
  MPI_Finalize();
  return code;
}

int Main(int argc, char** argv) {
  cli::Init(argc, argv,
            "mpirun -np 1 moe-coordinator --model DIR [--placement F] "
            "(--listen HOST:PORT | --tokens 1,2,3 --out F.npy [--incremental] | --prompt TEXT ... | "
            "--bench) : "
            "-np W moe-worker --model DIR");
  int provided = 0, rank = 0, size = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (rank != 0 || size < 2) {
    cli::Fail(absl::FailedPreconditionError(
        rank != 0 ? "moe-coordinator must be rank 0: list it first in the mpirun command"
                  : "no workers: launch at least one moe-worker after the coordinator (see scripts/launch.sh)"));
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  const auto start = std::chrono::steady_clock::now();
  const std::string model = cli::ModelDir();
  const int n_workers = size - 1;

  // 1. Placement, shared with every worker (they load only their experts from it).
  absl::StatusOr<ExpertPlacement> placement = [&]() -> absl::StatusOr<ExpertPlacement> {
    auto config = LoadMixtralConfig(model);
    if (!config.ok()) return config.status();
    const std::string file = absl::GetFlag(FLAGS_placement);
    if (!file.empty()) {
      return ExpertPlacement::FromFile(file, config->num_hidden_layers, config->num_local_experts, n_workers);
    }
    return ExpertPlacement::Contiguous(config->num_hidden_layers, config->num_local_experts, n_workers);
  }();
  absl::StatusOr<ExpertPlacement> shared = SharePlacement(&placement);
  if (!placement.ok()) {
    cli::Fail(placement.status());
    MPI_Finalize();
    return 1;
  }
  std::printf("moe-coordinator: %d workers; expert placement:\n%s", n_workers,
              shared->Describe().c_str());

  // 2. The attention side of the model; no expert.
  LoadOptions options;
  options.owns_expert = [](int, int) { return false; };
  auto weights = LoadModelWeights(model, options);
  // The attention side on this rank's device (reported with the load, like a missing file).
  std::unique_ptr<kernels::Backend> backend;
  const kernels::DeviceOptions device = cli::DeviceFlags();
  if (weights.ok()) {
    absl::StatusOr<std::unique_ptr<kernels::Backend>> made = kernels::MakeBackend(device);
    if (made.ok()) {
      backend = std::move(*made);
    } else {
      weights = made.status();
    }
  }
  const std::vector<RankReport> reports = GatherRankReports(ReportLoad(
      0, 0, weights, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(),
      device.cpu_numerics));
  std::printf("moe-coordinator: ranks started:\n%s", FormatRankReports(reports).c_str());
  std::fflush(stdout);

  // The data plane, agreed by every rank (a bad --exchange value still takes part, asking for MPI,
  // and is reported below).
  const absl::StatusOr<Transport> transport = ParseTransport(absl::GetFlag(FLAGS_exchange));
  std::string transport_note;
  absl::StatusOr<std::unique_ptr<DataPlane>> data_plane = ConnectDataPlane(
      transport.ok() ? *transport : Transport::kMpi, backend.get(), &transport_note);
  if (data_plane.ok()) {
    std::printf("moe-coordinator: exchange rows over %s\n", transport_note.c_str());
    std::fflush(stdout);
  }
  // With no plane (its set-up failed, reported below) the shutdown still goes over MPI.
  std::unique_ptr<DataPlane> plane = data_plane.ok() ? std::move(*data_plane) : NewMpiDataPlane();

  const bool serving = !absl::GetFlag(FLAGS_listen).empty();
  // Load telemetry (serving only): fed by the routing and the exchanges, and by the workers'
  // reports once they know where to send them (step 3).
  std::unique_ptr<LoadAggregator> telemetry;
  if (serving && weights.ok()) {
    const MixtralConfig& c = (*weights)->config;
    LoadAggregatorOptions t;
    t.n_layers = c.num_hidden_layers;
    t.n_experts = c.num_local_experts;
    t.top_k = c.num_experts_per_tok;
    t.placement = &*shared;
    t.window_seconds = absl::GetFlag(FLAGS_load_window_s);
    t.report_interval_seconds = absl::GetFlag(FLAGS_telemetry_interval_ms) / 1e3;
    telemetry = std::make_unique<LoadAggregator>(std::move(t));
  }

  ClusterExchangeOptions exchange_options;
  exchange_options.worker_timeout_seconds = absl::GetFlag(FLAGS_worker_timeout_s);
  // One-shot modes stop at the next exchange after a signal; a server drains its requests
  // gracefully instead (Serve watches the flag), so its exchanges must keep running.
  exchange_options.stop_requested = serving ? nullptr : &g_stop;
  if (telemetry != nullptr) {
    exchange_options.observer = telemetry.get();
    exchange_options.telemetry_epoch = telemetry->epoch();
  }
  ClusterExchange exchange(&*shared, plane.get(), backend.get(), exchange_options);
  // Workers wait for the telemetry endpoint after start-up; every path out must send it once.
  bool endpoint_sent = false;
  const std::string worker_token = NewTelemetryToken();
  auto send_endpoint = [&](const std::string& address) {
    if (endpoint_sent) return;
    endpoint_sent = true;
    ShareTelemetryEndpoint(TelemetryEndpoint{address, absl::GetFlag(FLAGS_telemetry_interval_ms), worker_token});
  };
  auto finish = [&](const absl::Status& s) {
    send_endpoint("");
    return Exit(s, &exchange, &plane);
  };
  if (absl::Status s = CheckRankReports(reports); !s.ok()) return finish(s);
  if (!transport.ok()) return finish(transport.status());
  if (!data_plane.ok()) return finish(data_plane.status());
  if (absl::GetFlag(FLAGS_telemetry_interval_ms) < 10) {
    return finish(absl::InvalidArgumentError("--telemetry-interval-ms must be >= 10"));
  }
  if (!(absl::GetFlag(FLAGS_worker_timeout_s) > 0)) {
    return finish(absl::InvalidArgumentError("--worker-timeout-s must be > 0"));
  }
  if (!(absl::GetFlag(FLAGS_load_window_s) > 0)) {
    return finish(absl::InvalidArgumentError("--load-window-s must be > 0"));
  }
  if (absl::GetFlag(FLAGS_telemetry_address).size() > 200) {
    return finish(absl::InvalidArgumentError("--telemetry-address is longer than 200 characters"));
  }

  // 3. The mode, through the cluster.
  // Stage times only for --bench: on a GPU they wait for the device after every stage.
  OpTimes times;
  absl::StatusOr<std::unique_ptr<ModelRunner>> made_runner = ModelRunner::Create(
      weights->get(), &exchange, backend.get(), absl::GetFlag(FLAGS_bench) ? &times : nullptr);
  if (!made_runner.ok()) return finish(made_runner.status());
  ModelRunner& runner = **made_runner;
  auto trace = cli::OpenRoutingTrace(&runner, &*shared);
  if (!trace.ok()) return finish(trace.status());
  absl::Status status;
  if (serving) {
    runner.AddRoutingObserver(telemetry.get());
    auto tokenizer = Tokenizer::Load(cli::DefaultTokenizerPath(model));
    if (!tokenizer.ok()) return finish(tokenizer.status());
    ServeOptions serve;
    serve.listen = absl::GetFlag(FLAGS_listen);
    serve.port_file = absl::GetFlag(FLAGS_port_file);
    serve.shutdown_grace_seconds = absl::GetFlag(FLAGS_shutdown_grace_s);
    serve.scheduler.max_batch_tokens = absl::GetFlag(FLAGS_max_batch_tokens);
    serve.scheduler.max_running = absl::GetFlag(FLAGS_max_running);
    serve.scheduler.max_waiting = absl::GetFlag(FLAGS_max_queue);
    serve.scheduler.kv_budget_bytes = absl::GetFlag(FLAGS_kv_cache_mb) << 20;
    serve.limits.max_tokens = absl::GetFlag(FLAGS_max_tokens_limit);
    serve.telemetry = telemetry.get();
    serve.worker_token = worker_token;
    serve.metrics_listen = absl::GetFlag(FLAGS_metrics_listen);
    serve.metrics_port_file = absl::GetFlag(FLAGS_metrics_port_file);
    serve.on_listening = [&](int port) { send_endpoint(TelemetryAddress(serve.listen, port)); };
    status = Serve(&runner, tokenizer->get(), &*shared, serve, &g_stop);
    if (status.ok() && g_stop.load()) {
      std::fprintf(stderr, "moe-coordinator: stopped by signal %d\n", g_signal.load());
    }
  } else if (cli::LogitsModeRequested()) {
    send_endpoint("");
    status = cli::RunLogitsMode(&runner);
  } else if (cli::GenerateModeRequested()) {
    send_endpoint("");
    status = cli::RunGenerateMode(&runner, model);
  } else if (absl::GetFlag(FLAGS_bench)) {
    send_endpoint("");
    cli::BenchHooks hooks;
    hooks.reset = [&] { exchange.stats().Reset(size); };
    hooks.report = [&](const char* phase) {
      const ExchangeStats& s = exchange.stats();
      if (s.exchanges == 0) return;
      const double per = 1e3 / static_cast<double>(s.exchanges);
      std::printf("  %s exchange per layer: %.3f ms wall = %.3f ms slowest worker's experts + %.3f ms "
                  "transfer, packing and waiting; %.2f MB sent, %.2f MB received\n",
                  phase, s.wall_seconds * per, s.slowest_compute_seconds * per,
                  (s.wall_seconds - s.slowest_compute_seconds) * per,
                  s.bytes_sent / 1e6 / s.exchanges, s.bytes_received / 1e6 / s.exchanges);
      std::string line = absl::StrCat("  ", phase, " per worker (rows, expert ms per layer):");
      for (int r = 1; r < size; ++r) {
        absl::StrAppendFormat(&line, " [%d] %d, %.3f", r, s.worker_rows[r],
                              s.worker_compute_seconds[r] * per);
      }
      std::printf("%s\n", line.c_str());
    };
    status = cli::RunBenchMode(&runner, **weights, &times, hooks);
  } else {
    status = absl::InvalidArgumentError(
        "nothing to do: give --listen (serve gRPC), --tokens and --out (logits dump), --prompt "
        "(generation) or --bench");
  }
  if (*trace != nullptr) {
    if (absl::Status closed = (*trace)->Close(); status.ok()) status = closed;
  }
  return finish(status);
}

}  // namespace
}  // namespace moe

int main(int argc, char** argv) { return moe::Main(argc, argv); }
