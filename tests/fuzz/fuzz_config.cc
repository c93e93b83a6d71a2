// Fuzz target: config.json (ParseMixtralConfig). An accepted config must be one the math can use:
// positive sizes, top-k within the experts, KV heads that divide the query heads, and floats that
// survive the conversion to float32 the kernels make (rope_theta >= 1, rms_norm_eps in [0, 1]).
#include <cfloat>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "core/model/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto parsed = moe::ParseMixtralConfig(std::string(reinterpret_cast<const char*>(data), size));
  if (!parsed.ok()) return 0;
  const moe::MixtralConfig& c = *parsed;
  const bool usable = c.hidden_size >= 1 && c.intermediate_size >= 1 && c.num_hidden_layers >= 1 &&
                      c.num_attention_heads >= 1 && c.num_key_value_heads >= 1 &&
                      c.num_attention_heads % c.num_key_value_heads == 0 && c.head_dim >= 1 &&
                      c.num_local_experts >= 1 && c.num_experts_per_tok >= 1 &&
                      c.num_experts_per_tok <= c.num_local_experts && c.vocab_size >= 1 &&
                      c.max_position_embeddings >= 1 && c.sliding_window >= 0 &&
                      c.rope_theta >= 1.0 && c.rope_theta <= FLT_MAX && c.rms_norm_eps >= 0.0 &&
                      c.rms_norm_eps <= 1.0;
  if (!usable) std::abort();
  c.Summary();
  return 0;
}
