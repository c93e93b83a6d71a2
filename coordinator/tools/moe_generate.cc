// moe-generate: generates text from a prompt with the whole model in this process, streaming it
// to stdout as it is produced.
#include "absl/flags/flag.h"
#include "coordinator/tools/local_engine.h"
#include "coordinator/tools/modes.h"
#include "core/cli/cli.h"

int main(int argc, char** argv) {
  using namespace moe;
  cli::Init(argc, argv,
            "moe-generate --model DIR --prompt TEXT [--max-tokens N ...] [--device cpu|cuda]");
  auto backend = cli::MakeBackend(cli::DeviceFlags());
  if (!backend.ok()) return cli::Fail(backend.status());
  auto engine = LocalEngine::Create(cli::ModelDir(), *std::move(backend), /*timed=*/false,
                                    cli::QuantizeFlag());
  if (!engine.ok()) return cli::Fail(engine.status());
  auto trace = cli::OpenRoutingTrace((*engine)->runner(), /*placement=*/nullptr);
  if (!trace.ok()) return cli::Fail(trace.status());
  if (auto s = cli::RunGenerateMode((*engine)->runner(), cli::ModelDir()); !s.ok()) return cli::Fail(s);
  if (*trace != nullptr) {
    if (auto s = (*trace)->Close(); !s.ok()) return cli::Fail(s);  // a broken trace is an error
  }
  return 0;
}
