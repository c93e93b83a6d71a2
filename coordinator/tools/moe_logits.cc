// moe-logits: writes the float32 logits of a token sequence as a NumPy .npy file [n_tokens, vocab],
// computed as one prefill or (--incremental) one token at a time through the KV cache. This is how
// other implementations check the engine: its flags and output format are a stable interface.
#include "coordinator/tools/local_engine.h"
#include "coordinator/tools/modes.h"
#include "core/cli/cli.h"

int main(int argc, char** argv) {
  using namespace moe;
  cli::Init(argc, argv, "moe-logits --model DIR --tokens 1,415,2936 --out FILE.npy [--incremental] [--device cpu|cuda]");
  if (!cli::LogitsModeRequested()) return cli::Fail(absl::InvalidArgumentError("--tokens is empty"));
  auto backend = cli::MakeBackend(cli::DeviceFlags());
  if (!backend.ok()) return cli::Fail(backend.status());
  auto engine = LocalEngine::Create(cli::ModelDir(), *std::move(backend), /*timed=*/false,
                                    cli::QuantizeFlag());
  if (!engine.ok()) return cli::Fail(engine.status());
  auto trace = cli::OpenRoutingTrace((*engine)->runner(), /*placement=*/nullptr);
  if (!trace.ok()) return cli::Fail(trace.status());
  if (auto s = cli::RunLogitsMode((*engine)->runner()); !s.ok()) return cli::Fail(s);
  if (*trace != nullptr) {
    if (auto s = (*trace)->Close(); !s.ok()) return cli::Fail(s);  // a broken trace is an error
  }
  return 0;
}
