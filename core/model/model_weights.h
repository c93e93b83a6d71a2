// ModelWeights: the tensors of a Hugging Face MixtralForCausalLM checkpoint, as typed views into
// memory-mapped safetensors files. Loads all of it or only the parts one process needs.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/model/config.h"
#include "core/model/safetensors.h"
#include "core/model/weight_formats.h"
#include "kernels/backend.h"
#include "kernels/ops.h"

namespace moe {

using kernels::WeightMatrix;

struct ExpertWeights {
  WeightMatrix w1;  // gate projection [intermediate, hidden]
  WeightMatrix w2;  // down projection [hidden, intermediate]
  WeightMatrix w3;  // up projection   [intermediate, hidden]
};

// What the attention side (coordinator) needs of one layer.
struct AttentionLayerWeights {
  std::vector<float> input_norm;  // [hidden], widened to float32 at load
  WeightMatrix q_proj;            // [n_heads * head_dim, hidden]
  WeightMatrix k_proj;            // [n_kv_heads * head_dim, hidden]
  WeightMatrix v_proj;            // [n_kv_heads * head_dim, hidden]
  WeightMatrix o_proj;            // [hidden, n_heads * head_dim]
  std::vector<float> post_norm;   // [hidden]
  WeightMatrix router;            // block_sparse_moe.gate [n_experts, hidden]
};

struct LayerWeights {
  AttentionLayerWeights attention;     // empty unless LoadOptions::attention_side
  std::vector<ExpertWeights> experts;  // [n_experts]; only owned ones have data
  std::vector<bool> owned;             // [n_experts]
};

struct ModelWeights {
  MixtralConfig config;
  // How the tensor classes are to be held (LoadOptions::formats); uploads read it
  // (UploadWeight's callers: ModelRunner, ExpertHost).
  WeightFormats formats;
  // The experts' dtype as held (the checkpoint's, quantized as formats.experts asks), read from
  // the checkpoint's header even where no expert is loaded (a coordinator's benchmark needs it).
  DType expert_dtype = DType::kBF16;
  WeightMatrix embed;             // [vocab, hidden] (attention side)
  std::vector<float> final_norm;  // [hidden]
  WeightMatrix lm_head;           // [vocab, hidden]; the embedding when tied
  std::vector<LayerWeights> layers;
  int64_t mapped_bytes = 0;  // bytes of the tensors this process uses (not the whole files)
  std::vector<std::unique_ptr<SafetensorsFile>> files;  // keep the mappings alive
  // Each loaded matrix's tensor name, by its data pointer: upload errors name the tensor.
  std::map<const void*, std::string> names;
};

struct LoadOptions {
  bool attention_side = true;  // embeddings, attention, router, final norm, lm_head
  // Which experts to map; null means all. A worker passes its placement here.
  std::function<bool(int layer, int expert)> owns_expert;
  // How to hold each tensor class (--quantize). A quantized checkpoint's tensors can only be
  // held as they are stored: asking for another format is an error here, at load.
  WeightFormats formats;
};

// Reads config.json and model.safetensors (or the shards named by model.safetensors.index.json)
// in model_dir. Every tensor the options ask for must exist with the right shape and a float
// dtype (F32, BF16, F16), or, for the matrices a quantized checkpoint holds (experts, attention
// projections, lm_head), a quantized format with its scales beside it (kernels/quant.h; written
// by moe-quantize, see core/model/quantized_checkpoint.h); nothing is copied except the small norm
// vectors.
absl::StatusOr<std::unique_ptr<ModelWeights>> LoadModelWeights(const std::string& model_dir,
                                                               const LoadOptions& options = {});

// `loaded` (one of weights' tensors) as `backend` reads it for `use` (Backend::Upload), and its
// mapped pages settled: when the backend made its own copy (packed CPU panels, GPU memory), the
// pages are released, so the checkpoint is not resident twice (they fault back in if read);
// when the backend reads the mapping in place, every page is read now, so that the tensor is
// resident before the first request and resident-memory reports mean something.
// format: the class's WeightFormats entry (quantize on the way; kernels::Backend::Upload).
absl::StatusOr<WeightMatrix> UploadWeight(
    const ModelWeights& weights, const WeightMatrix& loaded, kernels::Backend* backend,
    kernels::WeightUse use = kernels::WeightUse::kMatMul,
    kernels::WeightFormat format = kernels::WeightFormat::kAsStored);

// OK when every weight of the loaded (row-major) matrix is finite (for a quantized one, every
// scale and minimum); else an error naming the tensor and the first bad element's [row, column]
// (or the scale's): a NaN or an infinity would silently turn every logit it reaches into NaN.
absl::Status CheckFinite(const std::string& name, const WeightMatrix& w);

// Bytes of a loaded (row-major) matrix, scales included.
int64_t MatrixBytes(const WeightMatrix& w);

// Bytes of the loaded weights once held as weights.formats asks (quantized matrices at their
// formats' bits per weight, scales included, without the kernels' padding to whole panels and
// blocks; the router widened to float32): about what the weights occupy after upload.
int64_t HeldBytes(const ModelWeights& weights);

// How the loaded classes are held, e.g. "experts INT4" or "attention INT8, lm_head INT8".
std::string DescribeHeldWeights(const ModelWeights& weights);

// This process's resident set size in bytes (VmRSS), 0 if unknown.
int64_t ResidentBytes();

}  // namespace moe
