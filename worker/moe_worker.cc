// moe-worker: ranks 1..W of the cluster. Loads only the experts the coordinator's placement gives
// it (every layer) and answers forward steps until the coordinator shuts it down.
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "core/cli/cli.h"
#include "core/exchange/expert_host.h"
#include "core/mpi/cluster_setup.h"
#include "core/mpi/data_plane_setup.h"
#include "core/mpi/mpi_job.h"
#include "core/mpi/mpi_messenger.h"
#include "worker/expert_reloader.h"
#include "worker/expert_server.h"
#include "worker/load_recorder.h"
#include "worker/telemetry_reporter.h"

namespace moe {
namespace {

std::atomic<bool> g_stop{false};
void OnSignal(int) { g_stop = true; }

// A worker that could not load: it must still answer the shutdown that follows.
class RefusingRunner : public ExpertRunner {
 public:
  absl::Status RunExperts(const ExpertLayout&, const float*, float*) override {
    return absl::FailedPreconditionError("this worker failed to start");
  }
};

int Main(int argc, char** argv) {
  cli::Init(argc, argv, "mpirun -np 1 moe-coordinator ... : -np W moe-worker --model DIR [--threads N]");
  const int rank = StartMpiJob(&argc, &argv).rank;
  if (rank == 0) {
    cli::Fail(absl::FailedPreconditionError("moe-worker cannot be rank 0: list moe-coordinator first"));
    AbortMpiJob(1);
  }
  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  const auto start = std::chrono::steady_clock::now();
  const std::string model = cli::ModelDir();

  absl::StatusOr<ExpertPlacement> placement = SharePlacement(nullptr);
  if (!placement.ok()) {  // the coordinator reports it
    FinishMpiJob();
    return 1;
  }
  LoadOptions options;
  options.attention_side = false;
  options.formats = cli::QuantizeFlag();
  options.owns_expert = [&](int layer, int expert) { return placement->Owns(rank, layer, expert); };
  absl::StatusOr<std::unique_ptr<ModelWeights>> weights = LoadModelWeights(model, options);
  if (weights.ok() && ((*weights)->config.num_hidden_layers != placement->n_layers() ||
                       (*weights)->config.num_local_experts != placement->n_experts())) {
    weights = absl::FailedPreconditionError(absl::StrCat(
        model, " on this host has a different shape from the coordinator's model"));
  }
  // The experts on this rank's device: a missing GPU or too little memory is reported like a
  // missing file, by the coordinator, and this rank then refuses work.
  std::unique_ptr<kernels::Backend> backend;
  std::unique_ptr<ExpertHost> host;
  const kernels::DeviceOptions device = cli::DeviceFlags();
  if (weights.ok()) {
    absl::StatusOr<std::unique_ptr<kernels::Backend>> made = cli::MakeBackend(device);
    absl::StatusOr<std::unique_ptr<ExpertHost>> hosted =
        made.ok() ? ExpertHost::Create(weights->get(), &*placement, made->get()) : made.status();
    if (hosted.ok()) {
      backend = std::move(*made);
      host = std::move(*hosted);
    } else {
      weights = hosted.status();
    }
  }
  GatherRankReports(ReportLoad(
      rank, placement->CountOwned(rank), weights,
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(),
      device.cpu_numerics));
  // The data plane, as the coordinator decides; it reports a failure, and this rank then refuses
  // work and answers the shutdown over MPI.
  const std::unique_ptr<Messenger> messenger = NewMpiMessenger();
  absl::StatusOr<std::unique_ptr<DataPlane>> data_plane = ConnectDataPlane(
      Transport::kAuto, host != nullptr ? backend.get() : nullptr, messenger.get());
  if (!data_plane.ok()) {
    host.reset();  // before the weights it reads
    if (weights.ok()) weights = data_plane.status();
  }
  std::unique_ptr<DataPlane> plane =
      data_plane.ok() ? std::move(*data_plane) : NewHostDataPlane(messenger.get());

  // Load telemetry: counted by the serving loop, streamed by a thread of its own (serving only).
  const TelemetryEndpoint endpoint = ShareTelemetryEndpoint({});
  char host_name[256] = {};
  gethostname(host_name, sizeof(host_name) - 1);
  LoadRecorder recorder(rank, host_name, &*placement);
  std::unique_ptr<TelemetryReporter> reporter;
  if (!endpoint.address.empty() && weights.ok()) {
    reporter = std::make_unique<TelemetryReporter>(&recorder, endpoint);
  }

  ExpertServeOptions serve;
  serve.placement = &*placement;
  serve.stop_requested = &g_stop;
  serve.observer = &recorder;
  serve.messenger = messenger.get();
  serve.data = plane.get();
  serve.backend = backend.get();
  // Live re-placement: new experts load from this rank's own checkpoint in the background.
  std::unique_ptr<ExpertReloader> reloader;
  if (host != nullptr) {
    reloader = std::make_unique<ExpertReloader>(rank, model, host.get());
    serve.switcher = reloader.get();
  }
  RefusingRunner refusing;
  if (weights.ok()) {
    serve.n_layers = (*weights)->config.num_hidden_layers;
    serve.hidden = (*weights)->config.hidden_size;
  }
  const absl::Status status = ServeExperts(host ? static_cast<ExpertRunner*>(host.get()) : &refusing, serve);
  reporter.reset();
  plane.reset();  // NCCL's communicator before the GPU it runs on
  reloader.reset();  // its loader thread, before the host it loads into
  host.reset();  // before the backend it runs on
  backend.reset();
  if (!status.ok()) {
    cli::Fail(status);
    std::fflush(stderr);
    AbortMpiJob(1);
  }
  FinishMpiJob();
  return weights.ok() ? 0 : 1;
}

}  // namespace
}  // namespace moe

int main(int argc, char** argv) { return moe::Main(argc, argv); }
