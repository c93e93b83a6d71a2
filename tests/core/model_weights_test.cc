// Loading checkpoints: whole, a subset of experts, sharded, and every way a checkpoint can be wrong.
#include "core/model/model_weights.h"

#include <sys/stat.h>

#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <string>

#include "absl/strings/str_cat.h"
#include "core/model/quantized_checkpoint.h"
#include "gtest/gtest.h"
#include "kernels/quant.h"
#include "nlohmann/json.hpp"

namespace moe {
namespace {

struct Tensor {
  std::string dtype;
  std::vector<int64_t> shape;
};
using TensorMap = std::map<std::string, Tensor>;

constexpr int kHidden = 8, kInter = 12, kLayers = 2, kHeads = 2, kKv = 1, kExperts = 3, kVocab = 10;

TensorMap Mixtral() {
  TensorMap t;
  const int hd = kHidden / kHeads;
  t["model.embed_tokens.weight"] = {"F32", {kVocab, kHidden}};
  t["model.norm.weight"] = {"F32", {kHidden}};
  t["lm_head.weight"] = {"BF16", {kVocab, kHidden}};
  for (int l = 0; l < kLayers; ++l) {
    const std::string p = absl::StrCat("model.layers.", l, ".");
    t[p + "input_layernorm.weight"] = {"F32", {kHidden}};
    t[p + "post_attention_layernorm.weight"] = {"F16", {kHidden}};
    t[p + "self_attn.q_proj.weight"] = {"F32", {kHeads * hd, kHidden}};
    t[p + "self_attn.k_proj.weight"] = {"F32", {kKv * hd, kHidden}};
    t[p + "self_attn.v_proj.weight"] = {"F32", {kKv * hd, kHidden}};
    t[p + "self_attn.o_proj.weight"] = {"F32", {kHidden, kHeads * hd}};
    t[p + "block_sparse_moe.gate.weight"] = {"F32", {kExperts, kHidden}};
    for (int e = 0; e < kExperts; ++e) {
      const std::string ep = absl::StrCat(p, "block_sparse_moe.experts.", e, ".");
      t[ep + "w1.weight"] = {"BF16", {kInter, kHidden}};
      t[ep + "w2.weight"] = {"BF16", {kHidden, kInter}};
      t[ep + "w3.weight"] = {"BF16", {kInter, kHidden}};
    }
  }
  return t;
}

void WriteSafetensors(const std::string& path, const TensorMap& tensors) {
  nlohmann::json header = nlohmann::json::object();
  int64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    int64_t n = t.dtype == "F32" || t.dtype == "I32" ? 4
                : t.dtype == "I8" || t.dtype == "U8" ? 1
                                                     : 2;
    for (int64_t d : t.shape) n *= d;
    header[name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {offset, offset + n}}};
    offset += n;
  }
  std::string h = header.dump();
  h.append((8 - h.size() % 8) % 8, ' ');  // as safetensors pads, so tensors stay aligned
  const uint64_t len = h.size();
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(&len), 8);
  out << h << std::string(static_cast<size_t>(offset), '\x3f');
}

void WriteConfig(const std::string& dir) {
  std::ofstream(dir + "/config.json") << nlohmann::json{
      {"hidden_size", kHidden}, {"intermediate_size", kInter}, {"num_hidden_layers", kLayers},
      {"num_attention_heads", kHeads}, {"num_key_value_heads", kKv}, {"num_local_experts", kExperts},
      {"num_experts_per_tok", 2}, {"vocab_size", kVocab}, {"max_position_embeddings", 64}};
}

std::string FreshDir(const std::string& name) {
  const std::string dir = ::testing::TempDir() + "/mw_" + name;
  ::mkdir(dir.c_str(), 0755);
  WriteConfig(dir);
  return dir;
}

TEST(ModelWeightsTest, LoadsEverything) {
  const std::string dir = FreshDir("all");
  WriteSafetensors(dir + "/model.safetensors", Mixtral());
  auto w = LoadModelWeights(dir);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ((*w)->layers.size(), 2u);
  EXPECT_EQ((*w)->lm_head.dtype, DType::kBF16);
  EXPECT_EQ((*w)->layers[1].experts[2].w2.rows, kHidden);
  EXPECT_EQ((*w)->layers[1].experts[2].w2.cols, kInter);
  EXPECT_TRUE((*w)->layers[0].owned[1]);
  EXPECT_EQ((*w)->layers[0].attention.post_norm.size(), static_cast<size_t>(kHidden));
}

TEST(ModelWeightsTest, LoadsOnlyOwnedExperts) {
  const std::string dir = FreshDir("subset");
  TensorMap t = Mixtral();
  // A worker's subset must not need the attention side nor the other experts at all.
  t.erase("model.layers.0.block_sparse_moe.experts.0.w1.weight");
  t.erase("model.embed_tokens.weight");
  WriteSafetensors(dir + "/model.safetensors", t);
  LoadOptions opt;
  opt.attention_side = false;
  opt.owns_expert = [](int layer, int expert) { return expert == 1 || (layer == 1 && expert == 0); };
  auto w = LoadModelWeights(dir, opt);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_FALSE((*w)->layers[0].owned[0]);
  EXPECT_TRUE((*w)->layers[0].owned[1]);
  EXPECT_TRUE((*w)->layers[1].owned[0]);
  EXPECT_EQ((*w)->layers[0].experts[0].w1.data, nullptr);
  EXPECT_EQ((*w)->embed.data, nullptr);
  // 3 owned experts x 3 matrices x 96 BF16 values
  EXPECT_EQ((*w)->mapped_bytes, 3 * 3 * kInter * kHidden * 2);
}

TEST(ModelWeightsTest, LoadsShards) {
  const std::string dir = FreshDir("shards");
  TensorMap a, b;
  nlohmann::json map = nlohmann::json::object();
  int i = 0;
  for (const auto& [name, t] : Mixtral()) {
    const bool first = (i++ % 2) == 0;
    (first ? a : b)[name] = t;
    map[name] = first ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
  }
  WriteSafetensors(dir + "/model-00001-of-00002.safetensors", a);
  WriteSafetensors(dir + "/model-00002-of-00002.safetensors", b);
  std::ofstream(dir + "/model.safetensors.index.json") << nlohmann::json{{"weight_map", map}};
  auto w = LoadModelWeights(dir);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ((*w)->files.size(), 2u);
}

void ExpectLoadError(const std::string& name, const TensorMap& t, const std::string& fragment) {
  const std::string dir = FreshDir(name);
  WriteSafetensors(dir + "/model.safetensors", t);
  auto w = LoadModelWeights(dir);
  ASSERT_FALSE(w.ok()) << name;
  EXPECT_NE(std::string(w.status().message()).find(fragment), std::string::npos) << w.status();
}

TEST(ModelWeightsTest, RejectsBrokenCheckpoints) {
  TensorMap t = Mixtral();
  t.erase("model.layers.1.self_attn.k_proj.weight");
  ExpectLoadError("missing", t, "missing tensor 'model.layers.1.self_attn.k_proj.weight'");
  t = Mixtral();
  t["model.layers.0.block_sparse_moe.experts.2.w3.weight"].shape = {kHidden, kInter};
  ExpectLoadError("shape", t, "has shape [8, 12]; expected [12, 8]");
  t = Mixtral();
  t["model.norm.weight"].dtype = "I32";
  ExpectLoadError("dtype", t, "dtype I32");
  t = Mixtral();
  t["a.odd.bf16.tensor"] = {"BF16", {3}};  // sorts first, shifting every later tensor by 6 bytes
  ExpectLoadError("misaligned", t, "is not aligned");

  const std::string dir = FreshDir("nofile");
  EXPECT_EQ(LoadModelWeights(dir).status().code(), absl::StatusCode::kNotFound);

  const std::string bad_index = FreshDir("badindex");
  std::ofstream(bad_index + "/model.safetensors.index.json")
      << R"({"weight_map": {"model.norm.weight": "../../etc/passwd"}})";
  auto w = LoadModelWeights(bad_index);
  ASSERT_FALSE(w.ok());
  EXPECT_NE(std::string(w.status().message()).find("plain file name"), std::string::npos);
}

// Quantized checkpoints (core/model/quantized_checkpoint.h) written from a 16-bit one and read
// back: each class as asked, with its scales beside it, the rest as it was.
TEST(QuantizedCheckpointTest, WritesAndLoadsEveryClass) {
  const std::string src = FreshDir("q_src");
  WriteSafetensors(src + "/model.safetensors", Mixtral());
  const std::string out = ::testing::TempDir() + "/mw_q_out";
  QuantizeCheckpointOptions options;
  options.formats = *ParseWeightFormats("experts=int4,attention=int4,lm_head=int8");
  ASSERT_TRUE(QuantizeCheckpoint(src, out, options).ok());
  auto w = LoadModelWeights(out);
  ASSERT_TRUE(w.ok()) << w.status();
  const LayerWeights& l1 = (*w)->layers[1];
  EXPECT_EQ(l1.experts[2].w2.dtype, DType::kQ4);
  EXPECT_EQ(l1.experts[2].w2.cols, kInter);
  EXPECT_NE(l1.experts[2].w2.mins, nullptr);
  EXPECT_EQ(l1.attention.o_proj.dtype, DType::kQ4);
  EXPECT_EQ(l1.attention.router.dtype, DType::kF32);  // the router stays as stored
  EXPECT_EQ((*w)->lm_head.dtype, DType::kI8);
  EXPECT_EQ((*w)->embed.dtype, DType::kF32);
  EXPECT_EQ((*w)->expert_dtype, DType::kQ4);
  // Every byte of the source is 0x3f, so each weight is the same value, held exactly.
  const auto source = LoadModelWeights(src);
  ASSERT_TRUE(source.ok());
  std::vector<float> want(kInter), got(kInter);
  DequantizeRow((*source)->layers[1].experts[2].w2, 3, want.data());
  DequantizeRow(l1.experts[2].w2, 3, got.data());
  EXPECT_EQ(got, want);
  EXPECT_EQ(DescribeHeldWeights(**w), "experts INT4, attention INT4, lm_head INT8");
  // Held as stored, and asked for another format: refused at load, naming the tensor.
  LoadOptions as_int8;
  as_int8.formats = *ParseWeightFormats("experts=int8");
  auto refused = LoadModelWeights(out, as_int8);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(
      std::string(refused.status().message()).find("is stored as INT4 and cannot be held as int8"),
      std::string::npos)
      << refused.status();
  // A quantized checkpoint is not quantized again.
  const absl::Status again = QuantizeCheckpoint(out, out + "2", options);
  EXPECT_NE(std::string(again.message()).find("is already quantized"), std::string::npos) << again;
}

TEST(QuantizedCheckpointTest, ShardsAndTiedOutputLayer) {
  const std::string src = FreshDir("q_tied");
  std::ofstream(src + "/config.json")
      << nlohmann::json{{"hidden_size", kHidden},        {"intermediate_size", kInter},
                        {"num_hidden_layers", kLayers},  {"num_attention_heads", kHeads},
                        {"num_key_value_heads", kKv},    {"num_local_experts", kExperts},
                        {"num_experts_per_tok", 2},      {"vocab_size", kVocab},
                        {"max_position_embeddings", 64}, {"tie_word_embeddings", true}};
  TensorMap t = Mixtral();
  t.erase("lm_head.weight");
  WriteSafetensors(src + "/model.safetensors", t);
  const std::string out = ::testing::TempDir() + "/mw_q_tied_out";
  QuantizeCheckpointOptions options;
  options.formats = *ParseWeightFormats("lm_head=int8");
  options.shard_bytes = 600;  // a shard every few tensors
  ASSERT_TRUE(QuantizeCheckpoint(src, out, options).ok());
  auto w = LoadModelWeights(out);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_GT((*w)->files.size(), 2u);
  EXPECT_EQ((*w)->embed.dtype, DType::kF32);   // kept for the lookups
  EXPECT_EQ((*w)->lm_head.dtype, DType::kI8);  // written apart as lm_head.weight
  EXPECT_EQ((*w)->layers[0].experts[0].w1.dtype, DType::kBF16);
  std::ifstream config(out + "/config.json");
  const auto j = nlohmann::json::parse(config);
  EXPECT_EQ(j["quantization_config"]["lm_head"], "int8");
  EXPECT_EQ(j["quantization_config"]["experts"], "stored");
}

TEST(QuantizedCheckpointTest, RejectsBrokenQuantizedTensors) {
  TensorMap t = Mixtral();
  const std::string w1 = "model.layers.0.block_sparse_moe.experts.1.w1.weight";
  t[w1] = {"I8", {kInter, kHidden}};
  ExpectLoadError("q_noscale", t, "missing tensor '" + w1 + "_scale'");
  t[w1 + "_scale"] = {"F32", {kInter + 1}};
  ExpectLoadError("q_badscale", t, "'" + w1 + "_scale' is F32 [13]; expected F32 [12]");
  t = Mixtral();
  t[w1] = {"U8", {kInter, kHidden}};  // INT4 holds two levels a byte: [12, 4]
  t[w1 + "_scale"] = {"F16", {kInter, 1}};
  t[w1 + "_min"] = {"F16", {kInter, 1}};
  ExpectLoadError("q_int4_shape", t, "'" + w1 + "' is U8 [12, 8]; expected U8 [12, 4]");
  // The router and the embedding are never quantized: integers there are refused at load.
  t = Mixtral();
  const std::string gate = "model.layers.1.block_sparse_moe.gate.weight";
  t[gate] = {"I8", {kExperts, kHidden}};
  t[gate + "_scale"] = {"F32", {kExperts}};
  ExpectLoadError("q_router", t, "'" + gate + "' has dtype I8; expected F32, BF16 or F16");
  t = Mixtral();
  t["model.embed_tokens.weight"] = {"U8", {kVocab, kHidden / 2}};
  ExpectLoadError("q_embed", t, "'model.embed_tokens.weight' has dtype U8");
}

// Every float dtype's NaN and infinities are found at their [row, column]; quantized matrices
// are judged by their scales and minimums.
TEST(CheckFiniteTest, FindsTheFirstNonFiniteElement) {
  const std::vector<float> f32 = {1, 2, 3, -std::numeric_limits<float>::infinity(), 5, 6};
  EXPECT_TRUE(CheckFinite("a", WeightMatrix{DType::kF32, f32.data(), 1, 3}).ok());
  const absl::Status s = CheckFinite("a", WeightMatrix{DType::kF32, f32.data(), 2, 3});
  EXPECT_NE(std::string(s.message()).find("tensor 'a' holds a NaN or an infinite weight at [1, 0]"),
            std::string::npos)
      << s;
  std::vector<uint16_t> half(9000, 0x3c00);  // 1.0 as F16; 0x3f80 is 1.0 as BF16
  EXPECT_TRUE(CheckFinite("h", WeightMatrix{DType::kF16, half.data(), 9, 1000}).ok());
  half[8321] = 0x7e00;  // F16 NaN, past the first chunk
  EXPECT_NE(std::string(CheckFinite("h", WeightMatrix{DType::kF16, half.data(), 9, 1000}).message())
                .find("at [8, 321]"),
            std::string::npos);
  std::vector<uint16_t> bf16(10, 0x3f80);
  bf16[4] = 0xff80;  // BF16 -inf
  EXPECT_FALSE(CheckFinite("b", WeightMatrix{DType::kBF16, bf16.data(), 2, 5}).ok());
  // INT4: levels are never checked; a NaN minimum is.
  std::vector<uint8_t> levels(8, 0xff);
  std::vector<uint16_t> scales(2, 0x3c00), mins(2, 0x3c00);
  WeightMatrix q4{DType::kQ4, levels.data(), 2, 8};
  q4.scales = scales.data();
  q4.mins = mins.data();
  EXPECT_TRUE(CheckFinite("q", q4).ok());
  mins[1] = 0x7e00;
  EXPECT_NE(std::string(CheckFinite("q", q4).message()).find("infinite minimum at [1, 0]"),
            std::string::npos);
}

}  // namespace
}  // namespace moe
