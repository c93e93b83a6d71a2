// moe-perplexity: perplexity of a model over a text file, by llama-perplexity's protocol (chunks
// of --ctx tokens, each scored on its second half), in one process, at any --quantize: the
// accuracy figure beside llama.cpp's for the same text.
#include "coordinator/tools/local_engine.h"
#include "coordinator/tools/modes.h"
#include "core/cli/cli.h"

int main(int argc, char** argv) {
  using namespace moe;
  cli::Init(argc, argv,
            "moe-perplexity --model DIR --perplexity-file TEXT [--ctx 512] [--chunks N] "
            "[--quantize int8|int4|...] [--threads N]");
  if (!cli::PerplexityModeRequested()) {
    return cli::Fail(absl::InvalidArgumentError("--perplexity-file is required"));
  }
  auto backend = cli::MakeBackend(cli::DeviceFlags());
  if (!backend.ok()) return cli::Fail(backend.status());
  auto engine = LocalEngine::Create(cli::ModelDir(), *std::move(backend), /*timed=*/false,
                                    cli::QuantizeFlag());
  if (!engine.ok()) return cli::Fail(engine.status());
  if (auto s = cli::RunPerplexityMode((*engine)->runner(), cli::ModelDir()); !s.ok())
    return cli::Fail(s);
  return 0;
}
