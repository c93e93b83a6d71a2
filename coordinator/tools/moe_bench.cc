// moe-bench: prefill and decode speed of the single-process engine on a model directory, for
// one or several batch sizes, with a per-op breakdown, peak memory, and every figure next to this
// machine's measured memory bandwidth and peak arithmetic rate. A benchmark program, not a test:
// it prints figures and judges nothing.
#include "coordinator/tools/local_engine.h"
#include "coordinator/tools/modes.h"
#include "core/cli/cli.h"

int main(int argc, char** argv) {
  using namespace moe;
  cli::Init(argc, argv, "moe-bench --model DIR [--batch 1,16,64] [--bench-prompt-tokens 512] "
                        "[--bench-decode-tokens 32] [--threads N] [--device cpu|cuda] [--cpu-numerics fast|f32]");
  auto backend = cli::MakeBackend(cli::DeviceFlags());
  if (!backend.ok()) return cli::Fail(backend.status());
  auto engine = LocalEngine::Create(cli::ModelDir(), *std::move(backend), /*timed=*/true,
                                    cli::QuantizeFlag());
  if (!engine.ok()) return cli::Fail(engine.status());
  auto trace = cli::OpenRoutingTrace((*engine)->runner(), /*placement=*/nullptr);
  if (!trace.ok()) return cli::Fail(trace.status());
  if (auto s = cli::RunBenchMode((*engine)->runner(), (*engine)->weights(), (*engine)->times());
      !s.ok()) {
    return cli::Fail(s);
  }
  if (*trace != nullptr) {
    if (auto s = (*trace)->Close(); !s.ok()) return cli::Fail(s);  // a broken trace is an error
  }
  return 0;
}
