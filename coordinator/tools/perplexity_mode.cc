// Perplexity mode: the mean next-token loss of a model over a text file, by llama.cpp's
// llama-perplexity protocol, so the two can be set side by side: the file is tokenized whole with
// one BOS in front, cut into chunks of --ctx tokens (the remainder dropped), each chunk's first
// token replaced by BOS, and each chunk scored on the predictions of its second half (every
// position from ctx / 2 to ctx - 2 predicts the next token), with the whole chunk as context.
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "coordinator/tools/modes.h"
#include "core/base/status_macros.h"
#include "core/cli/cli.h"
#include "core/model/tokenizer.h"

ABSL_FLAG(std::string, perplexity_file, "",
          "measure perplexity over this text file (llama-perplexity's protocol; see --ctx)");
ABSL_FLAG(int, ctx, 512, "with --perplexity-file, tokens per chunk (llama-perplexity's -c)");
ABSL_FLAG(int, chunks, 0, "with --perplexity-file, score at most this many chunks (0: all)");
ABSL_FLAG(int, chunk_batch, 4, "with --perplexity-file, chunks run together in one forward pass");

namespace moe::cli {
namespace {

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("--perplexity-file: cannot read ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// -log softmax(logits)[target], in double.
double NegLogLikelihood(const float* logits, int64_t vocab, int32_t target) {
  float max = logits[0];
  for (int64_t v = 1; v < vocab; ++v) max = std::max(max, logits[v]);
  double sum = 0;
  for (int64_t v = 0; v < vocab; ++v) sum += std::exp(static_cast<double>(logits[v]) - max);
  return std::log(sum) + max - logits[target];
}

}  // namespace

bool PerplexityModeRequested() { return !absl::GetFlag(FLAGS_perplexity_file).empty(); }

absl::Status RunPerplexityMode(ModelRunner* runner, const std::string& model_dir) {
  const int ctx = absl::GetFlag(FLAGS_ctx), batch = absl::GetFlag(FLAGS_chunk_batch);
  if (ctx < 4) return absl::InvalidArgumentError("--ctx must be at least 4");
  if (batch < 1) return absl::InvalidArgumentError("--chunk-batch must be at least 1");
  if (ctx > runner->config().max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat("--ctx ", ctx, " is beyond the model's ",
                                                   runner->config().max_position_embeddings,
                                                   " positions"));
  }
  MOE_ASSIGN_OR_RETURN(const std::string text, ReadFile(absl::GetFlag(FLAGS_perplexity_file)));
  MOE_ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tokenizer,
                       Tokenizer::Load(DefaultTokenizerPath(model_dir)));
  const std::vector<int> ids = tokenizer->Encode(text, /*add_bos=*/true);
  MOE_RETURN_IF_ERROR(runner->config().CheckTokenIds(ids));  // a tokenizer wider than the model
  int64_t n_chunks = static_cast<int64_t>(ids.size()) / ctx;
  if (absl::GetFlag(FLAGS_chunks) > 0)
    n_chunks = std::min<int64_t>(n_chunks, absl::GetFlag(FLAGS_chunks));
  if (n_chunks == 0) {
    return absl::InvalidArgumentError(absl::StrCat("--perplexity-file holds ", ids.size(),
                                                   " tokens, fewer than one chunk of --ctx ", ctx));
  }
  std::printf("perplexity: %zu tokens, %lld chunks of %d, scoring positions %d..%d of each\n",
              ids.size(), static_cast<long long>(n_chunks), ctx, ctx / 2, ctx - 2);
  const int64_t vocab = runner->config().vocab_size;
  const int first = ctx / 2;
  double sum = 0, sum_sq = 0;
  int64_t count = 0;
  std::vector<float> logits;
  for (int64_t c0 = 0; c0 < n_chunks; c0 += batch) {
    const int64_t nb = std::min<int64_t>(batch, n_chunks - c0);
    std::vector<std::vector<int32_t>> tokens(static_cast<size_t>(nb));
    std::vector<KvCache> caches;
    std::vector<SequenceChunk> chunks;
    for (int64_t b = 0; b < nb; ++b) {
      tokens[b].assign(ids.begin() + (c0 + b) * ctx, ids.begin() + (c0 + b + 1) * ctx);
      tokens[b][0] = tokenizer->bos_id();
      caches.push_back(runner->NewCache());
    }
    for (int64_t b = 0; b < nb; ++b) {
      chunks.push_back(SequenceChunk{&caches[b], tokens[b], /*all_logits=*/true,
                                     /*sequence_id=*/static_cast<uint64_t>(c0 + b + 1),
                                     /*prefill=*/true});
    }
    MOE_RETURN_IF_ERROR(runner->Forward(chunks, &logits));
    for (int64_t b = 0; b < nb; ++b) {
      for (int j = first; j < ctx - 1; ++j) {
        const double nll =
            NegLogLikelihood(logits.data() + (b * ctx + j) * vocab, vocab, tokens[b][j + 1]);
        sum += nll;
        sum_sq += nll * nll;
        ++count;
      }
      std::printf("[%lld]%.4f%s", static_cast<long long>(c0 + b + 1), std::exp(sum / count),
                  c0 + b + 1 == n_chunks ? "\n" : ",");
    }
    std::fflush(stdout);
  }
  // The uncertainty of the mean loss, carried to the perplexity (llama-perplexity's estimate).
  const double mean = sum / count;
  const double variance = std::max(0.0, sum_sq / count - mean * mean);
  const double ppl = std::exp(mean);
  std::printf("perplexity: PPL = %.4f +/- %.4f over %lld predictions (mean loss %.6f)\n", ppl,
              ppl * std::sqrt(variance / std::max<int64_t>(count - 1, 1)),
              static_cast<long long>(count), mean);
  return absl::OkStatus();
}

}  // namespace moe::cli
