// Hugging Face tokenizer files (tokenizer.json, tokenizer_config.json) for a SentencePiece BPE
// model, so tools that load tokenizers through `transformers` (lm-eval, aiperf, guidellm) tokenize
// exactly as the server does. The pipeline is the one Mixtral's own tokenizer.json spells: a "▁"
// prepended to each span and spaces as "▁", BPE with byte fallback, BOS before the text.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "core/model/sentencepiece_model.h"

namespace moe {

// tokenizer.json. The merges are SentencePiece's scores turned into ranks, as transformers'
// LlamaConverter makes them: every split of a normal piece into two normal pieces, the higher the
// merged piece's score the earlier. Fails on models our Tokenizer does not encode (not BPE, not the
// identity normaliser).
absl::StatusOr<std::string> HuggingFaceTokenizerJson(const SentencePieceModel& model);

// tokenizer_config.json: the special tokens, BOS added and EOS not, model_max_length, and
// chat_template when it is not empty.
std::string HuggingFaceTokenizerConfig(const SentencePieceModel& model, int model_max_length,
                                       const std::string& chat_template);

}  // namespace moe
