// moe-bench: prefill and decode speed of the single-process engine on a model directory, with a
// per-op breakdown, peak memory, and the decode roofline from this machine's measured memory
// bandwidth. A benchmark program, not a test: it prints figures and judges nothing.
#include "coordinator/tools/cli.h"
#include "coordinator/tools/local_engine.h"
#include "coordinator/tools/modes.h"

int main(int argc, char** argv) {
  using namespace moe;
  cli::Init(argc, argv, "moe-bench --model DIR [--prompt-tokens 512] [--decode-tokens 32] [--threads N] [--device cpu|cuda]");
  auto engine = LocalEngine::Create(cli::ModelDir(), cli::DeviceFlags(), /*timed=*/true);
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
