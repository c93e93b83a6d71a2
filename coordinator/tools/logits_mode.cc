// Logits-dump mode: the stable interface other implementations are checked against.
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "coordinator/tools/modes.h"
#include "core/base/status_macros.h"
#include "core/model/npy.h"

ABSL_FLAG(std::string, tokens, "",
          "comma-separated token ids, e.g. 1,415,2936 (no BOS is added); several sequences, run "
          "together in one batch, separated by ';', e.g. 1,415;1,2936,28");
ABSL_FLAG(std::string, out, "",
          "output .npy file: float32 [n_tokens, vocab], the sequences' rows one after the other");
ABSL_FLAG(bool, incremental, false,
          "feed one token at a time through the KV cache (one token of every sequence per step)");

namespace moe::cli {
namespace {

absl::StatusOr<std::vector<int32_t>> ParseSequence(absl::string_view text) {
  if (text.empty()) return absl::InvalidArgumentError("--tokens: a sequence is empty");
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

absl::StatusOr<std::vector<std::vector<int32_t>>> ParseTokens(const std::string& text) {
  if (text.empty()) return absl::InvalidArgumentError("--tokens is empty");
  std::vector<std::vector<int32_t>> sequences;
  for (absl::string_view part : absl::StrSplit(text, ';')) {
    MOE_ASSIGN_OR_RETURN(std::vector<int32_t> ids, ParseSequence(part));
    sequences.push_back(std::move(ids));
  }
  return sequences;
}

}  // namespace

bool LogitsModeRequested() {
  return !absl::GetFlag(FLAGS_tokens).empty() || !absl::GetFlag(FLAGS_out).empty();
}

absl::Status RunLogitsMode(ModelRunner* runner) {
  const std::string out = absl::GetFlag(FLAGS_out);
  if (out.empty()) return absl::InvalidArgumentError("--out is required");
  MOE_ASSIGN_OR_RETURN(const std::vector<std::vector<int32_t>> sequences,
                       ParseTokens(absl::GetFlag(FLAGS_tokens)));
  const int64_t vocab = runner->config().vocab_size;
  const size_t n_seq = sequences.size();
  std::vector<KvCache> caches;
  // Sequences 1..n of given tokens: all of them are prompt, none sampled, even fed one by one.
  const double now = std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
  int64_t n_tokens = 0;
  for (size_t i = 0; i < n_seq; ++i) {
    caches.push_back(runner->NewCache());
    SequenceInfo info;
    info.prompt_tokens = static_cast<int32_t>(sequences[i].size());
    info.arrival_seconds = now;
    runner->BeginSequence(i + 1, info);
    n_tokens += static_cast<int64_t>(sequences[i].size());
  }
  struct End {
    ModelRunner* runner;
    size_t n;
    ~End() {
      for (size_t i = 0; i < n; ++i) runner->EndSequence(i + 1);
    }
  } end{runner, n_seq};
  // rows[i]: sequence i's logits, [its tokens, vocab].
  std::vector<std::vector<float>> rows(n_seq);
  std::vector<float> logits;
  int steps = 0, split_steps = 0;
  auto forward = [&](const std::vector<SequenceChunk>& chunks, const std::vector<size_t>& owners) -> absl::Status {
    MOE_RETURN_IF_ERROR(runner->Forward(chunks, &logits));
    ++steps;
    split_steps += runner->last_micro_batches() == 2;
    size_t row = 0;
    for (size_t c = 0; c < chunks.size(); ++c) {
      const size_t n = chunks[c].tokens.size() * static_cast<size_t>(vocab);
      rows[owners[c]].insert(rows[owners[c]].end(), logits.begin() + row, logits.begin() + row + n);
      row += n;
    }
    return absl::OkStatus();
  };
  if (absl::GetFlag(FLAGS_incremental)) {
    for (size_t t = 0;; ++t) {
      std::vector<SequenceChunk> chunks;
      std::vector<size_t> owners;
      for (size_t i = 0; i < n_seq; ++i) {
        if (t >= sequences[i].size()) continue;
        chunks.push_back(SequenceChunk{&caches[i], absl::MakeConstSpan(&sequences[i][t], 1), /*all_logits=*/true,
                                       /*sequence_id=*/i + 1, /*prefill=*/true});
        owners.push_back(i);
      }
      if (chunks.empty()) break;
      MOE_RETURN_IF_ERROR(forward(chunks, owners));
    }
  } else {
    std::vector<SequenceChunk> chunks;
    std::vector<size_t> owners;
    for (size_t i = 0; i < n_seq; ++i) {
      chunks.push_back(SequenceChunk{&caches[i], sequences[i], /*all_logits=*/true, /*sequence_id=*/i + 1,
                                     /*prefill=*/true});
      owners.push_back(i);
    }
    MOE_RETURN_IF_ERROR(forward(chunks, owners));
  }
  // Said only when it happened (--overlap in the cluster): the tests check that it did.
  if (split_steps > 0) {
    std::fprintf(stderr, "logits: %d of %d steps ran as two micro-batches\n", split_steps, steps);
  }
  std::vector<float> all;
  all.reserve(static_cast<size_t>(n_tokens * vocab));
  for (const std::vector<float>& r : rows) all.insert(all.end(), r.begin(), r.end());
  return WriteNpy(out, all.data(), {n_tokens, vocab});
}

}  // namespace moe::cli
