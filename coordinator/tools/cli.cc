#include "coordinator/tools/cli.h"

#include "coordinator/tools/flag_spelling.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/thread_pool.h"

ABSL_FLAG(std::string, model, "", "model directory (config.json + safetensors)");
ABSL_FLAG(int, threads, 0, "CPU threads (0 = one per core)");
ABSL_FLAG(std::string, device, "cpu", "where this process computes: cpu or cuda");
ABSL_FLAG(int, cuda_device, -1,
          "with --device cuda, the GPU index to use; -1 picks OMPI_COMM_WORLD_LOCAL_RANK modulo "
          "the GPUs visible (0 outside mpirun)");
ABSL_FLAG(std::string, cpu_numerics, "fast",
          "how CPU products treat activations: fast (BF16 weights multiply activations rounded "
          "to BF16, with the CPU's BF16 dot products where it has them) or f32 (every product a "
          "float32 product; slower)");
ABSL_FLAG(std::string, routing_trace, "",
          "record every token's routing (request, position, token, experts and weights per layer) "
          "into this file; see docs/routing-trace-format.md and scripts/analyze_routing.py");

namespace moe::cli {
namespace {

std::string& ToolName() {
  static std::string name = "moe";
  return name;
}

bool Exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

}  // namespace

std::vector<char*> Init(int argc, char** argv, const char* usage) {
  kernels::MaybeReexecWithOpenBlasCoreType(argv);
  std::string name = argv[0];
  ToolName() = name.substr(name.find_last_of('/') + 1);
  AcceptDashedFlagNames(argc, argv);
  absl::SetProgramUsageMessage(usage);
  std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  kernels::SetCpuThreads(absl::GetFlag(FLAGS_threads));
  return positional;
}

kernels::DeviceOptions DeviceFlags() {
  kernels::DeviceOptions options;
  options.device = absl::GetFlag(FLAGS_device);
  options.cuda_device = absl::GetFlag(FLAGS_cuda_device);
  const std::string numerics = absl::GetFlag(FLAGS_cpu_numerics);
  if (numerics == "fast") {
    options.cpu_numerics = kernels::MatMulNumerics::kRoundActivations;
  } else if (numerics == "f32") {
    options.cpu_numerics = kernels::MatMulNumerics::kFloat32;
  } else {
    std::exit(Fail(absl::InvalidArgumentError(
        absl::StrCat("--cpu-numerics must be fast or f32, got '", numerics, "'"))));
  }
  return options;
}

std::string ModelDir() {
  const std::string dir = absl::GetFlag(FLAGS_model);
  if (dir.empty()) std::exit(Fail(absl::InvalidArgumentError("--model is required")));
  return dir;
}

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "%s: error: %s\n", ToolName().c_str(), std::string(status.message()).c_str());
  return 1;
}

std::string DefaultTokenizerPath(const std::string& model_dir) {
  const std::string in_model = model_dir + "/tokenizer.model";
  if (Exists(in_model)) return in_model;
  char exe[4096];
  const ssize_t n = ::readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  if (n > 0) {
    std::string dir(exe, static_cast<size_t>(n));
    dir = dir.substr(0, dir.find_last_of('/'));
    if (Exists(dir + "/tokenizer.model")) return dir + "/tokenizer.model";
  }
  return in_model;
}

absl::StatusOr<std::unique_ptr<RoutingTraceWriter>> OpenRoutingTrace(ModelRunner* runner,
                                                                     const ExpertPlacement* placement) {
  const std::string path = absl::GetFlag(FLAGS_routing_trace);
  if (path.empty()) return nullptr;
  absl::StatusOr<std::unique_ptr<RoutingTraceWriter>> writer =
      RoutingTraceWriter::Open(path, runner->config(), placement);
  if (writer.ok()) runner->AddRoutingObserver(writer->get());
  return writer;
}

}  // namespace moe::cli
