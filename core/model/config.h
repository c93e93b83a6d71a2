// MixtralConfig: every config.json field that changes inference, parsed and validated.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace moe {

struct MixtralConfig {
  int64_t hidden_size = 0;               // model width, e.g. 4096
  int64_t intermediate_size = 0;         // expert FFN width, e.g. 14336
  int num_hidden_layers = 0;             // e.g. 32
  int num_attention_heads = 0;           // query heads, e.g. 32
  int num_key_value_heads = 0;           // KV heads (GQA), e.g. 8; divides num_attention_heads
  int head_dim = 0;                      // per head; hidden_size / num_attention_heads unless given
  int num_local_experts = 0;             // experts per layer, e.g. 8
  int num_experts_per_tok = 0;           // top-k, e.g. 2
  int64_t vocab_size = 0;                // e.g. 32000
  double rope_theta = 1e6;               // RoPE base
  double rms_norm_eps = 1e-5;            // added to mean(x^2)
  int64_t sliding_window = 0;            // 0: none (null in config.json); else keys p-window+1..p
  int64_t max_position_embeddings = 0;   // longest sequence (prompt + generated), e.g. 32768
  int bos_token_id = 1;                  // prepended to prompts
  std::vector<int> eos_token_ids = {2};  // any of them ends generation
  bool tie_word_embeddings = false;      // lm_head shares embed_tokens when true

  // Says exactly which field is wrong.
  absl::Status Validate() const;
  // The one end-of-sequence rule: any of eos_token_ids ends a generation.
  bool IsEos(int32_t token_id) const;
  // Every id within [0, vocab_size); the error names the first that is not.
  absl::Status CheckTokenIds(absl::Span<const int32_t> ids) const;
  std::string Summary() const;  // one line for logs
};

// Parses config.json text. Unknown fields are ignored; fields that change inference are required
// (or take Hugging Face's default where MixtralConfig has one).
absl::StatusOr<MixtralConfig> ParseMixtralConfig(const std::string& json_text);
absl::StatusOr<MixtralConfig> LoadMixtralConfig(const std::string& model_dir);

}  // namespace moe
