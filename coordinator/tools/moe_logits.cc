// moe-logits: writes the float32 logits of a token sequence as a NumPy .npy file [n_tokens, vocab],
// computed as one prefill or (--incremental) one token at a time through the KV cache. This is how
// other implementations check the engine: its flags and output format are a stable interface.
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "coordinator/tools/cli.h"
#include "coordinator/tools/local_engine.h"
#include "core/npy.h"
#include "kernels/cpu/thread_pool.h"

ABSL_FLAG(std::string, model, "", "model directory (config.json + safetensors)");
ABSL_FLAG(std::string, tokens, "", "comma-separated token ids, e.g. 1,415,2936 (no BOS is added)");
ABSL_FLAG(std::string, out, "", "output .npy file: float32 [n_tokens, vocab]");
ABSL_FLAG(bool, incremental, false, "feed one token at a time through the KV cache");
ABSL_FLAG(int, threads, 0, "CPU threads (0 = one per core)");

namespace moe {
namespace {

absl::StatusOr<std::vector<int32_t>> ParseTokens(const std::string& text) {
  if (text.empty()) return absl::InvalidArgumentError("--tokens is empty");
  std::vector<int32_t> ids;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    int32_t id;
    if (!absl::SimpleAtoi(part, &id)) {
      return absl::InvalidArgumentError(absl::StrCat("--tokens: '", part, "' is not an integer"));
    }
    ids.push_back(id);
  }
  return ids;
}

absl::Status Run() {
  const std::string model = absl::GetFlag(FLAGS_model);
  const std::string out = absl::GetFlag(FLAGS_out);
  if (model.empty()) return absl::InvalidArgumentError("--model is required");
  if (out.empty()) return absl::InvalidArgumentError("--out is required");
  auto tokens = ParseTokens(absl::GetFlag(FLAGS_tokens));
  if (!tokens.ok()) return tokens.status();
  kernels::SetCpuThreads(absl::GetFlag(FLAGS_threads));
  auto engine = LocalEngine::Create(model);
  if (!engine.ok()) return engine.status();
  ModelRunner* runner = (*engine)->runner();
  const int64_t vocab = runner->config().vocab_size;

  KvCache cache = runner->NewCache();
  std::vector<float> all;
  if (absl::GetFlag(FLAGS_incremental)) {
    std::vector<float> logits;
    for (int32_t id : *tokens) {
      const int32_t one[] = {id};
      const SequenceChunk chunk{&cache, one, /*all_logits=*/true};
      if (auto s = runner->Forward({&chunk, 1}, &logits); !s.ok()) return s;
      all.insert(all.end(), logits.begin(), logits.end());
    }
  } else {
    const SequenceChunk chunk{&cache, *tokens, /*all_logits=*/true};
    if (auto s = runner->Forward({&chunk, 1}, &all); !s.ok()) return s;
  }
  return WriteNpy(out, all.data(), {static_cast<int64_t>(tokens->size()), vocab});
}

}  // namespace
}  // namespace moe

int main(int argc, char** argv) {
  moe::cli::Init(argc, argv, "moe-logits --model DIR --tokens 1,415,2936 --out FILE.npy [--incremental]");
  if (auto s = moe::Run(); !s.ok()) return moe::cli::Fail(s);
  return 0;
}
