#include "core/model_weights.h"

#include <fstream>
#include <map>
#include <sstream>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/match.h"
#include "core/status_macros.h"
#include "nlohmann/json.hpp"

namespace moe {
namespace {

bool FileExists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

// Finds tensors by name across the checkpoint's files.
class TensorIndex {
 public:
  absl::Status Open(const std::string& dir, ModelWeights* w) {
    const std::string single = dir + "/model.safetensors";
    const std::string index = dir + "/model.safetensors.index.json";
    if (FileExists(index)) return OpenSharded(dir, index, w);
    if (!FileExists(single)) {
      return absl::NotFoundError(absl::StrCat(dir, ": neither model.safetensors nor ",
                                              "model.safetensors.index.json exists"));
    }
    MOE_ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(single));
    for (const auto& [name, t] : file->tensors()) by_name_[name] = &t;
    w->files.push_back(std::move(file));
    return absl::OkStatus();
  }

  absl::StatusOr<const SafetensorsTensor*> Get(const std::string& name) const {
    auto it = by_name_.find(name);
    if (it == by_name_.end()) return absl::NotFoundError(absl::StrCat("missing tensor '", name, "'"));
    return it->second;
  }

 private:
  absl::Status OpenSharded(const std::string& dir, const std::string& index, ModelWeights* w) {
    std::ifstream in(index);
    std::stringstream ss;
    ss << in.rdbuf();
    const auto j = nlohmann::json::parse(ss.str(), nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object() || !j.contains("weight_map") ||
        !j["weight_map"].is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(index, ": expected a JSON object with weight_map"));
    }
    std::map<std::string, SafetensorsFile*> shards;
    for (const auto& [name, shard] : j["weight_map"].items()) {
      if (!shard.is_string()) return absl::InvalidArgumentError(absl::StrCat(index, ": bad entry for ", name));
      const std::string file_name = shard.get<std::string>();
      if (file_name.find('/') != std::string::npos || file_name.empty() || file_name[0] == '.') {
        return absl::InvalidArgumentError(absl::StrCat(index, ": shard name '", file_name,
                                                       "' must be a plain file name"));
      }
      auto it = shards.find(file_name);
      if (it == shards.end()) {
        MOE_ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(dir + "/" + file_name));
        it = shards.emplace(file_name, file.get()).first;
        w->files.push_back(std::move(file));
      }
      const SafetensorsTensor* t = it->second->Find(name);
      if (t == nullptr) {
        return absl::NotFoundError(absl::StrCat("tensor '", name, "' is listed in ", index,
                                                " but missing from ", file_name));
      }
      by_name_[name] = t;
    }
    return absl::OkStatus();
  }

  std::map<std::string, const SafetensorsTensor*> by_name_;
};

absl::StatusOr<DType> FloatDType(const std::string& name, const SafetensorsTensor& t) {
  DType dtype;
  if (t.dtype == "F32") {
    dtype = DType::kF32;
  } else if (t.dtype == "BF16") {
    dtype = DType::kBF16;
  } else if (t.dtype == "F16") {
    dtype = DType::kF16;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor '", name, "' has dtype ", t.dtype, "; expected F32, BF16 or F16"));
  }
  // Writers align every tensor to its element size (safetensors sorts by dtype for that); the
  // kernels read whole elements, so a misaligned tensor is refused rather than read unaligned.
  if (reinterpret_cast<uintptr_t>(t.data) % DTypeSize(dtype) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor '", name, "' is not aligned to its ", DTypeSize(dtype), "-byte elements"));
  }
  return dtype;
}

class Loader {
 public:
  Loader(const TensorIndex& index, ModelWeights* w) : index_(index), w_(w) {}

  absl::StatusOr<WeightMatrix> Matrix(const std::string& name, int64_t rows, int64_t cols) {
    MOE_ASSIGN_OR_RETURN(const SafetensorsTensor* t, index_.Get(name));
    MOE_ASSIGN_OR_RETURN(DType dtype, FloatDType(name, *t));
    if (t->shape != std::vector<int64_t>{rows, cols}) {
      return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' has shape [",
                                                     absl::StrJoin(t->shape, ", "), "]; expected [",
                                                     rows, ", ", cols, "]"));
    }
    w_->mapped_bytes += t->n_bytes;
    return WeightMatrix{dtype, t->data, rows, cols};
  }

  absl::StatusOr<std::vector<float>> Vector(const std::string& name, int64_t n) {
    MOE_ASSIGN_OR_RETURN(const SafetensorsTensor* t, index_.Get(name));
    MOE_ASSIGN_OR_RETURN(DType dtype, FloatDType(name, *t));
    if (t->shape != std::vector<int64_t>{n}) {
      return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' has shape [",
                                                     absl::StrJoin(t->shape, ", "), "]; expected [",
                                                     n, "]"));
    }
    std::vector<float> v(static_cast<size_t>(n));
    ConvertRowToF32Scalar(dtype, t->data, n, v.data());
    return v;
  }

 private:
  const TensorIndex& index_;
  ModelWeights* w_;
};

absl::StatusOr<std::unique_ptr<ModelWeights>> LoadAll(const std::string& model_dir,
                                                      const LoadOptions& options) {
  auto w = std::make_unique<ModelWeights>();
  MOE_ASSIGN_OR_RETURN(w->config, LoadMixtralConfig(model_dir));
  const MixtralConfig& c = w->config;
  TensorIndex index;
  MOE_RETURN_IF_ERROR(index.Open(model_dir, w.get()));
  Loader load(index, w.get());

  const int64_t hidden = c.hidden_size, inter = c.intermediate_size;
  const int64_t q_rows = static_cast<int64_t>(c.num_attention_heads) * c.head_dim;
  const int64_t kv_rows = static_cast<int64_t>(c.num_key_value_heads) * c.head_dim;

  if (options.attention_side) {
    MOE_ASSIGN_OR_RETURN(w->embed, load.Matrix("model.embed_tokens.weight", c.vocab_size, hidden));
    MOE_ASSIGN_OR_RETURN(w->final_norm, load.Vector("model.norm.weight", hidden));
    if (c.tie_word_embeddings) {
      w->lm_head = w->embed;
    } else {
      MOE_ASSIGN_OR_RETURN(w->lm_head, load.Matrix("lm_head.weight", c.vocab_size, hidden));
    }
  }
  w->layers.resize(static_cast<size_t>(c.num_hidden_layers));
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    LayerWeights& layer = w->layers[l];
    const std::string p = absl::StrCat("model.layers.", l, ".");
    if (options.attention_side) {
      AttentionLayerWeights& a = layer.attention;
      MOE_ASSIGN_OR_RETURN(a.input_norm, load.Vector(p + "input_layernorm.weight", hidden));
      MOE_ASSIGN_OR_RETURN(a.post_norm, load.Vector(p + "post_attention_layernorm.weight", hidden));
      MOE_ASSIGN_OR_RETURN(a.q_proj, load.Matrix(p + "self_attn.q_proj.weight", q_rows, hidden));
      MOE_ASSIGN_OR_RETURN(a.k_proj, load.Matrix(p + "self_attn.k_proj.weight", kv_rows, hidden));
      MOE_ASSIGN_OR_RETURN(a.v_proj, load.Matrix(p + "self_attn.v_proj.weight", kv_rows, hidden));
      MOE_ASSIGN_OR_RETURN(a.o_proj, load.Matrix(p + "self_attn.o_proj.weight", hidden, q_rows));
      MOE_ASSIGN_OR_RETURN(a.router, load.Matrix(p + "block_sparse_moe.gate.weight",
                                                 c.num_local_experts, hidden));
    }
    layer.experts.resize(static_cast<size_t>(c.num_local_experts));
    layer.owned.assign(static_cast<size_t>(c.num_local_experts), false);
    for (int e = 0; e < c.num_local_experts; ++e) {
      if (options.owns_expert && !options.owns_expert(l, e)) continue;
      const std::string ep = absl::StrCat(p, "block_sparse_moe.experts.", e, ".");
      ExpertWeights& ew = layer.experts[e];
      MOE_ASSIGN_OR_RETURN(ew.w1, load.Matrix(ep + "w1.weight", inter, hidden));
      MOE_ASSIGN_OR_RETURN(ew.w2, load.Matrix(ep + "w2.weight", hidden, inter));
      MOE_ASSIGN_OR_RETURN(ew.w3, load.Matrix(ep + "w3.weight", inter, hidden));
      layer.owned[e] = true;
    }
  }
  return w;
}

}  // namespace

absl::StatusOr<std::unique_ptr<ModelWeights>> LoadModelWeights(const std::string& model_dir,
                                                               const LoadOptions& options) {
  auto w = LoadAll(model_dir, options);
  // File-level errors already name their file; tensor-level ones get the directory.
  if (!w.ok() && !absl::StrContains(w.status().message(), model_dir)) {
    return absl::Status(w.status().code(), absl::StrCat(model_dir, ": ", w.status().message()));
  }
  return w;
}

absl::StatusOr<WeightMatrix> UploadWeight(const ModelWeights& weights, const WeightMatrix& loaded,
                                          kernels::Backend* backend, kernels::WeightUse use) {
  const int64_t bytes = loaded.rows * loaded.cols * DTypeSize(loaded.dtype);
  for (const auto& file : weights.files) file->PopulatePages(loaded.data, bytes);
  MOE_ASSIGN_OR_RETURN(WeightMatrix uploaded, backend->Upload(loaded, use));
  if (uploaded.data != loaded.data) {
    for (const auto& file : weights.files) {
      if (file->ReleasePages(loaded.data, bytes)) break;
    }
    return uploaded;
  }
  const long page = sysconf(_SC_PAGESIZE);
  const char* p = static_cast<const char*>(loaded.data);
  volatile uint64_t sink = 0;  // volatile: the reads are the point
  for (int64_t off = 0; off < bytes; off += page) sink = sink + static_cast<unsigned char>(p[off]);
  return uploaded;
}

int64_t ResidentBytes() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::atoll(line.c_str() + 6) * 1024;  // "VmRSS: N kB"
  }
  return 0;
}

}  // namespace moe
