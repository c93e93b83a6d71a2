#include "core/model/config.h"

#include "gtest/gtest.h"

namespace moe {
namespace {

constexpr char kValid[] = R"({
  "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
  "num_attention_heads": 8, "num_key_value_heads": 2, "num_local_experts": 4,
  "num_experts_per_tok": 2, "vocab_size": 1000, "rope_theta": 10000.0, "rms_norm_eps": 1e-6,
  "sliding_window": null, "max_position_embeddings": 512, "bos_token_id": 1, "eos_token_id": 2,
  "tie_word_embeddings": false, "hidden_act": "silu"})";

TEST(ConfigTest, ParsesEveryField) {
  auto c = ParseMixtralConfig(kValid);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->hidden_size, 64);
  EXPECT_EQ(c->head_dim, 8);  // derived: 64 / 8
  EXPECT_EQ(c->num_key_value_heads, 2);
  EXPECT_EQ(c->num_local_experts, 4);
  EXPECT_EQ(c->num_experts_per_tok, 2);
  EXPECT_EQ(c->sliding_window, 0);
  EXPECT_DOUBLE_EQ(c->rope_theta, 10000.0);
  EXPECT_DOUBLE_EQ(c->rms_norm_eps, 1e-6);
  EXPECT_EQ(c->max_position_embeddings, 512);
  EXPECT_EQ(c->eos_token_ids, std::vector<int>{2});
}

TEST(ConfigTest, ExplicitHeadDimAndWindowAndEosList) {
  std::string j = kValid;
  j.replace(j.find("\"sliding_window\": null"), 22, "\"sliding_window\": 16, \"head_dim\": 32");
  j.replace(j.find("\"eos_token_id\": 2"), 17, "\"eos_token_id\": [2, 7]");
  auto c = ParseMixtralConfig(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->head_dim, 32);
  EXPECT_EQ(c->sliding_window, 16);
  EXPECT_EQ(c->eos_token_ids, (std::vector<int>{2, 7}));
}

void ExpectError(std::string json, const std::string& fragment) {
  auto c = ParseMixtralConfig(json);
  ASSERT_FALSE(c.ok()) << json;
  EXPECT_NE(std::string(c.status().message()).find(fragment), std::string::npos) << c.status();
}

std::string WithQuantization(const std::string& block) {
  std::string j = kValid;
  j.replace(j.rfind('}'), 1, ", \"quantization_config\": " + block + "}");
  return j;
}

// moe-quantize's own block loads; another method's (a hub GPTQ checkpoint) or another version
// of ours is refused up front, saying what it is.
TEST(ConfigTest, QuantizationConfigMustBeOurs) {
  EXPECT_TRUE(ParseMixtralConfig(
                  WithQuantization(
                      R"({"quant_method": "moe-cluster", "format_version": 1, "group_size": 64})"))
                  .ok());
  EXPECT_TRUE(ParseMixtralConfig(WithQuantization("null")).ok());
  ExpectError(WithQuantization(R"({"quant_method": "gptq", "bits": 4, "group_size": 128})"),
              "names quant_method 'gptq', which this build cannot load");
  ExpectError(WithQuantization(R"({"bits": 4})"), "quant_method '(none)'");
  ExpectError(WithQuantization(R"({"quant_method": 7})"), "quant_method '7'");
  ExpectError(
      WithQuantization(R"({"quant_method": "moe-cluster", "format_version": 2, "group_size": 64})"),
      "is format_version 2, group_size 64; this build reads format_version 1, group_size 64");
  ExpectError(WithQuantization(R"({"quant_method": "moe-cluster", "format_version": 1})"),
              "group_size (none)");
  ExpectError(WithQuantization("[]"), "'quantization_config' must be an object");
}

std::string Replace(std::string s, const std::string& from, const std::string& to) {
  s.replace(s.find(from), from.size(), to);
  return s;
}

TEST(ConfigTest, RejectsBadInput) {
  ExpectError("{", "not valid JSON");
  ExpectError("[1, 2]", "object");
  ExpectError(Replace(kValid, "\"hidden_size\": 64,", ""), "'hidden_size' is missing");
  ExpectError(Replace(kValid, "\"hidden_size\": 64", "\"hidden_size\": \"64\""), "must be an integer");
  ExpectError(Replace(kValid, "\"hidden_size\": 64", "\"hidden_size\": -1"), "must be positive");
  ExpectError(Replace(kValid, "\"num_key_value_heads\": 2", "\"num_key_value_heads\": 3"), "must divide");
  ExpectError(Replace(kValid, "\"num_experts_per_tok\": 2", "\"num_experts_per_tok\": 5"), "exceeds");
  ExpectError(Replace(kValid, "\"silu\"", "\"gelu\""), "hidden_act");
  ExpectError(Replace(kValid, "\"num_hidden_layers\": 2", "\"num_hidden_layers\": 99999999999999"), "out of range");
  ExpectError(Replace(kValid, "\"vocab_size\": 1000", "\"vocab_size\": 99999999999999"), "implausibly");
  ExpectError(Replace(kValid, "\"bos_token_id\": 1", "\"bos_token_id\": 1000"), "bos_token_id");
  ExpectError(Replace(kValid, "\"eos_token_id\": 2", "\"eos_token_id\": 4294967298"), "eos_token_id");
  ExpectError(Replace(kValid, "\"eos_token_id\": 2", "\"eos_token_id\": [2, -1]"), "eos_token_id");
  ExpectError(Replace(kValid, "\"hidden_size\": 64", "\"hidden_size\": 2000000000"), "implausibly");
  // Values that pass a double's check but break the float32 math (issue 15): refused by name.
  ExpectError(Replace(kValid, "\"rope_theta\": 10000.0", "\"rope_theta\": 1e-50"), "rope_theta");
  ExpectError(Replace(kValid, "\"rope_theta\": 10000.0", "\"rope_theta\": 1e39"), "rope_theta");
  ExpectError(Replace(kValid, "\"rms_norm_eps\": 1e-6", "\"rms_norm_eps\": 1e39"), "rms_norm_eps");
  ExpectError(Replace(kValid, "\"rms_norm_eps\": 1e-6", "\"rms_norm_eps\": -1e-6"), "rms_norm_eps");
}

TEST(ConfigTest, MissingFileIsNotFound) {
  auto c = LoadMixtralConfig("/nonexistent-dir");
  EXPECT_EQ(c.status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace moe
