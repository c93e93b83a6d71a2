#include "core/cli/cli.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "core/cli/flag_spelling.h"
#include "kernels/cpu/packed_matmul.h"
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

ABSL_FLAG(std::string, quantize, "",
          "hold weights quantized: int8 (every class), int4 (experts INT4, attention and lm_head "
          "INT8), or class by class, e.g. experts=int4,attention=int4,lm_head=stored; empty: as "
          "the checkpoint stores them (a quantized checkpoint stays as written)");

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

// OpenBLAS 0.3.21 does not know recent AVX-512 CPUs (AMD Zen 4/5, new Xeons): it falls back to
// Haswell or Prescott kernels that run sgemm 2-5x slower. The core type can only be chosen through
// the environment before the library initialises, so this sets OPENBLAS_CORETYPE=SkylakeX and
// re-executes the program once when the CPU has AVX-512 and the user did not choose. Returns only
// if no re-exec happened.
void MaybeReexecWithOpenBlasCoreType(char** argv) {
#if defined(__x86_64__)
  if (std::getenv("OPENBLAS_CORETYPE") != nullptr) return;
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512bw") ||
      !__builtin_cpu_supports("avx512vl") || !__builtin_cpu_supports("avx512dq")) {
    return;
  }
  setenv("OPENBLAS_CORETYPE", "SkylakeX", 1);
  execv("/proc/self/exe", argv);
  // execv failed (no /proc?): carry on with the slower kernels rather than not run at all.
#else
  (void)argv;
#endif
}

// Open MPI's rank of this process among those on its host; 0 outside mpirun.
int LocalRank() {
  const char* env = std::getenv("OMPI_COMM_WORLD_LOCAL_RANK");
  int rank = 0;
  if (env == nullptr) return 0;
  if (!absl::SimpleAtoi(env, &rank) || rank < 0) {
    std::exit(Fail(absl::InvalidArgumentError(
        absl::StrCat("OMPI_COMM_WORLD_LOCAL_RANK is not a rank: '", env, "'"))));
  }
  return rank;
}

}  // namespace

std::vector<char*> Init(int argc, char** argv, const char* usage) {
  MaybeReexecWithOpenBlasCoreType(argv);
  std::string name = argv[0];
  ToolName() = name.substr(name.find_last_of('/') + 1);
  AcceptDashedFlagNames(argc, argv);
  absl::SetProgramUsageMessage(usage);
  // --help lists the program's own flags and the ones every tool shares (abseil's default matches
  // flags to a file named after the program: moe-coordinator is moe_coordinator.cc, so nothing
  // matched), never abseil's own (--flagfile, --fromenv, ...).
  absl::FlagsUsageConfig help;
  auto ours = [](absl::string_view file) { return !absl::StrContains(file, "absl/"); };
  help.contains_help_flags = ours;
  help.contains_helpshort_flags = ours;
  help.normalize_filename = [](absl::string_view file) {
    for (absl::string_view root : {"/coordinator/", "/worker/", "/core/", "/kernels/"}) {
      if (const size_t at = file.rfind(root); at != absl::string_view::npos)
        return std::string(file.substr(at + 1));
    }
    return std::string(file);
  };
  absl::SetFlagsUsageConfig(help);
  std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  // MOE_CPU_AMX=0 keeps the AMX tiles off, to compare the two BF16 paths on one machine.
  if (const char* amx = std::getenv("MOE_CPU_AMX"); amx != nullptr && std::strcmp(amx, "0") == 0) {
    kernels::packed::AllowAmx(false);
  }
  kernels::SetCpuThreads(absl::GetFlag(FLAGS_threads));
  return positional;
}

kernels::DeviceOptions DeviceFlags() {
  kernels::DeviceOptions options;
  options.device = absl::GetFlag(FLAGS_device);
  if (options.device != "cpu" && options.device != "cuda") {
    std::exit(Fail(absl::InvalidArgumentError(
        absl::StrCat("--device must be cpu or cuda, got '", options.device, "'"))));
  }
  options.cuda_device = absl::GetFlag(FLAGS_cuda_device);
  if (options.cuda_device < -1) {
    std::exit(Fail(absl::InvalidArgumentError(
        absl::StrCat("--cuda-device must be a GPU index or -1, got ", options.cuda_device))));
  }
  options.local_rank = LocalRank();
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

absl::StatusOr<std::unique_ptr<kernels::Backend>> MakeBackend(
    const kernels::DeviceOptions& device) {
  absl::StatusOr<std::unique_ptr<kernels::Backend>> made = kernels::MakeBackend(device);
  if (made.ok()) return made;
  const std::string flags =
      device.cuda_device >= 0
          ? absl::StrCat("--device ", device.device, " --cuda-device ", device.cuda_device)
          : absl::StrCat("--device ", device.device);
  return absl::Status(made.status().code(), absl::StrCat(flags, ": ", made.status().message()));
}

std::string ModelDir() {
  const std::string dir = absl::GetFlag(FLAGS_model);
  if (dir.empty()) std::exit(Fail(absl::InvalidArgumentError("--model is required")));
  return dir;
}

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "%s: error: %s\n", ToolName().c_str(),
               std::string(status.message()).c_str());
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

WeightFormats QuantizeFlag() {
  absl::StatusOr<WeightFormats> formats = ParseWeightFormats(absl::GetFlag(FLAGS_quantize));
  if (!formats.ok()) std::exit(Fail(formats.status()));
  return *formats;
}

}  // namespace moe::cli
