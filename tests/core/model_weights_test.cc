// Loading checkpoints: whole, a subset of experts, sharded, and every way a checkpoint can be wrong.
#include "core/model_weights.h"

#include <sys/stat.h>

#include <cstring>
#include <fstream>
#include <map>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
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
    int64_t n = t.dtype == "F32" || t.dtype == "I32" ? 4 : 2;
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

}  // namespace
}  // namespace moe
