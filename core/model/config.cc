#include "core/model/config.h"

#include <cmath>
#include <fstream>
#include <limits>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/base/status_macros.h"
#include "kernels/quant.h"
#include "nlohmann/json.hpp"

namespace moe {
namespace {

using nlohmann::json;

absl::Status FieldError(const std::string& field, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("field '", field, "' ", what));
}

// Reads an integer field into out; missing fields keep out when optional.
template <typename Int>
absl::Status ReadInt(const json& j, const char* field, bool required, Int* out) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) {
    return required ? FieldError(field, "is missing") : absl::OkStatus();
  }
  if (!it->is_number_integer()) return FieldError(field, "must be an integer");
  const int64_t v = it->get<int64_t>();
  if (v < static_cast<int64_t>(std::numeric_limits<Int>::min()) ||
      v > static_cast<int64_t>(std::numeric_limits<Int>::max())) {
    return FieldError(field, absl::StrCat("is out of range: ", v));
  }
  *out = static_cast<Int>(v);
  return absl::OkStatus();
}

absl::Status ReadDouble(const json& j, const char* field, double* out) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_number()) return FieldError(field, "must be a number");
  *out = it->get<double>();
  return absl::OkStatus();
}

}  // namespace

absl::Status MixtralConfig::Validate() const {
  auto positive = [](const char* f, int64_t v) -> absl::Status {
    if (v <= 0) return FieldError(f, absl::StrCat("must be positive, got ", v));
    return absl::OkStatus();
  };
  MOE_RETURN_IF_ERROR(positive("hidden_size", hidden_size));
  MOE_RETURN_IF_ERROR(positive("intermediate_size", intermediate_size));
  MOE_RETURN_IF_ERROR(positive("num_hidden_layers", num_hidden_layers));
  MOE_RETURN_IF_ERROR(positive("num_attention_heads", num_attention_heads));
  MOE_RETURN_IF_ERROR(positive("num_key_value_heads", num_key_value_heads));
  MOE_RETURN_IF_ERROR(positive("head_dim", head_dim));
  MOE_RETURN_IF_ERROR(positive("num_local_experts", num_local_experts));
  MOE_RETURN_IF_ERROR(positive("num_experts_per_tok", num_experts_per_tok));
  MOE_RETURN_IF_ERROR(positive("vocab_size", vocab_size));
  MOE_RETURN_IF_ERROR(positive("max_position_embeddings", max_position_embeddings));
  // Bounds that keep every size product far from overflow; real models are orders below them.
  if (hidden_size > (1 << 20) || intermediate_size > (1 << 22) || vocab_size > (1 << 24) ||
      num_hidden_layers > 4096 || num_local_experts > 4096 || head_dim > 65536 ||
      num_attention_heads > 65536 || max_position_embeddings > (1 << 26)) {
    return absl::InvalidArgumentError("dimensions are implausibly large");
  }
  if (num_attention_heads % num_key_value_heads != 0) {
    return FieldError("num_key_value_heads",
                      absl::StrCat("(", num_key_value_heads, ") must divide num_attention_heads (",
                                   num_attention_heads, ")"));
  }
  if (head_dim % 2 != 0) return FieldError("head_dim", "must be even for RoPE");
  if (num_experts_per_tok > num_local_experts) {
    return FieldError("num_experts_per_tok",
                      absl::StrCat("(", num_experts_per_tok, ") exceeds num_local_experts (",
                                   num_local_experts, ")"));
  }
  // Checked as the kernels use them, in float32: 1e-50 passes "> 0" as a double and is 0 as a
  // float (every logit NaN), and 1e39 does not fit a float at all.
  if (!std::isfinite(rope_theta) || !(rope_theta >= 1) ||
      rope_theta > std::numeric_limits<float>::max()) {
    return FieldError("rope_theta",
                      absl::StrCat("must be at least 1 and fit a float (got ", rope_theta, ")"));
  }
  if (!std::isfinite(rms_norm_eps) || !(rms_norm_eps >= 0) || rms_norm_eps > 1) {
    return FieldError("rms_norm_eps", absl::StrCat("must be in [0, 1] (got ", rms_norm_eps, ")"));
  }
  if (sliding_window < 0) return FieldError("sliding_window", "must be positive or null");
  if (bos_token_id < 0 || bos_token_id >= vocab_size) {
    return FieldError("bos_token_id", "is outside the vocabulary");
  }
  for (int e : eos_token_ids) {
    if (e < 0 || e >= vocab_size) return FieldError("eos_token_id", "is outside the vocabulary");
  }
  return absl::OkStatus();
}

std::string MixtralConfig::Summary() const {
  return absl::StrCat(
      "layers=", num_hidden_layers, " hidden=", hidden_size, " ffn=", intermediate_size,
      " heads=", num_attention_heads, "/", num_key_value_heads, " head_dim=", head_dim,
      " experts=", num_local_experts, " top_k=", num_experts_per_tok, " vocab=", vocab_size,
      " window=", sliding_window == 0 ? std::string("none") : std::to_string(sliding_window),
      " rope_theta=", rope_theta, " tied=", tie_word_embeddings ? "yes" : "no");
}

// A quantized checkpoint must be ours (moe-quantize), at the version and group size this build
// reads: a hub checkpoint of another method (GPTQ, AWQ, compressed-tensors) would otherwise fail
// later, on a missing tensor, without saying why.
absl::Status CheckQuantizationConfig(const json& j) {
  const auto it = j.find("quantization_config");
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_object()) return FieldError("quantization_config", "must be an object");
  const auto m = it->find("quant_method");
  const std::string method = m == it->end()   ? "(none)"
                             : m->is_string() ? m->get<std::string>()
                                              : m->dump();
  if (method != kernels::kQuantMethod) {
    return FieldError("quantization_config",
                      absl::StrCat("names quant_method '", method, "', which this build cannot ",
                                   "load (only moe-quantize's): start from the model's 16-bit ",
                                   "checkpoint, with --quantize or moe-quantize"));
  }
  const auto version = it->find("format_version"), group = it->find("group_size");
  if (version == it->end() || *version != kernels::kQuantFormatVersion || group == it->end() ||
      *group != kernels::kQuantBlock) {
    return FieldError(
        "quantization_config",
        absl::StrCat("is format_version ", version == it->end() ? "(none)" : version->dump(),
                     ", group_size ", group == it->end() ? "(none)" : group->dump(),
                     "; this build reads format_version ", kernels::kQuantFormatVersion,
                     ", group_size ", kernels::kQuantBlock));
  }
  return absl::OkStatus();
}

absl::StatusOr<MixtralConfig> ParseMixtralConfig(const std::string& json_text) {
  const json j = json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError("not valid JSON");
  if (!j.is_object()) return absl::InvalidArgumentError("top level must be an object");

  MixtralConfig c;
  MOE_RETURN_IF_ERROR(ReadInt(j, "hidden_size", true, &c.hidden_size));
  MOE_RETURN_IF_ERROR(ReadInt(j, "intermediate_size", true, &c.intermediate_size));
  MOE_RETURN_IF_ERROR(ReadInt(j, "num_hidden_layers", true, &c.num_hidden_layers));
  MOE_RETURN_IF_ERROR(ReadInt(j, "num_attention_heads", true, &c.num_attention_heads));
  c.num_key_value_heads = c.num_attention_heads;  // HF default when absent
  MOE_RETURN_IF_ERROR(ReadInt(j, "num_key_value_heads", false, &c.num_key_value_heads));
  if (c.num_attention_heads > 0)
    c.head_dim = static_cast<int>(c.hidden_size / c.num_attention_heads);
  MOE_RETURN_IF_ERROR(ReadInt(j, "head_dim", false, &c.head_dim));
  MOE_RETURN_IF_ERROR(ReadInt(j, "num_local_experts", true, &c.num_local_experts));
  MOE_RETURN_IF_ERROR(ReadInt(j, "num_experts_per_tok", true, &c.num_experts_per_tok));
  MOE_RETURN_IF_ERROR(ReadInt(j, "vocab_size", true, &c.vocab_size));
  MOE_RETURN_IF_ERROR(ReadDouble(j, "rope_theta", &c.rope_theta));
  MOE_RETURN_IF_ERROR(ReadDouble(j, "rms_norm_eps", &c.rms_norm_eps));
  MOE_RETURN_IF_ERROR(ReadInt(j, "sliding_window", false, &c.sliding_window));
  c.max_position_embeddings = 4096 * 32;  // HF MixtralConfig default
  MOE_RETURN_IF_ERROR(ReadInt(j, "max_position_embeddings", false, &c.max_position_embeddings));
  MOE_RETURN_IF_ERROR(ReadInt(j, "bos_token_id", false, &c.bos_token_id));

  if (auto it = j.find("eos_token_id"); it != j.end() && !it->is_null()) {
    c.eos_token_ids.clear();
    auto add = [&](const nlohmann::json& e) -> absl::Status {
      if (!e.is_number_integer()) return FieldError("eos_token_id", "must hold integers");
      const int64_t v = e.get<int64_t>();
      if (v < 0 || v > std::numeric_limits<int>::max()) {
        return FieldError("eos_token_id", absl::StrCat("is out of range: ", v));
      }
      c.eos_token_ids.push_back(static_cast<int>(v));
      return absl::OkStatus();
    };
    if (it->is_number_integer()) {
      MOE_RETURN_IF_ERROR(add(*it));
    } else if (it->is_array()) {
      for (const auto& e : *it) MOE_RETURN_IF_ERROR(add(e));
    } else {
      return FieldError("eos_token_id", "must be an integer or a list of integers");
    }
  }
  if (auto it = j.find("tie_word_embeddings"); it != j.end() && !it->is_null()) {
    if (!it->is_boolean()) return FieldError("tie_word_embeddings", "must be true or false");
    c.tie_word_embeddings = it->get<bool>();
  }
  if (auto it = j.find("hidden_act"); it != j.end() && !it->is_null()) {
    if (!it->is_string() || it->get<std::string>() != "silu") {
      return FieldError("hidden_act", absl::StrCat("must be \"silu\", got ", it->dump()));
    }
  }
  MOE_RETURN_IF_ERROR(CheckQuantizationConfig(j));
  MOE_RETURN_IF_ERROR(c.Validate());
  return c;
}

absl::StatusOr<MixtralConfig> LoadMixtralConfig(const std::string& model_dir) {
  const std::string path = model_dir + "/config.json";
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  auto config = ParseMixtralConfig(ss.str());
  if (!config.ok()) {
    return absl::Status(config.status().code(),
                        absl::StrCat(path, ": ", config.status().message()));
  }
  return config;
}

bool MixtralConfig::IsEos(int32_t token_id) const {
  return std::find(eos_token_ids.begin(), eos_token_ids.end(), token_id) != eos_token_ids.end();
}

absl::Status MixtralConfig::CheckTokenIds(absl::Span<const int32_t> ids) const {
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("token id ", id, " is outside the vocabulary [0, ", vocab_size, ")"));
    }
  }
  return absl::OkStatus();
}

}  // namespace moe
