// Quantized checkpoints: a Hugging Face checkpoint directory rewritten with some tensor classes
// quantized (kernels/quant.h), so a large model is read at its quantized size on every start
// instead of being quantized again from 16 bits.
//
// The format is self-describing safetensors: a quantized matrix NAME is written as
//   NAME        I8 [rows, cols]                 (INT8 levels), or
//               U8 [rows, (cols + 1) / 2]       (INT4 levels, two a byte, low nibble first)
//   NAME_scale  F32 [rows] (INT8), or F16 [rows, ceil(cols / 64)] (INT4)
//   NAME_min    F16 [rows, ceil(cols / 64)]     (INT4 only)
// every other tensor as it was; config.json gains a "quantization_config" block naming the
// format of each class, and each file's header metadata the same. A tied model keeps its
// embedding at 16 bits for the lookups and gets the quantized output layer as lm_head.weight.
// LoadModelWeights reads it (core/model/model_weights.h).
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "core/model/weight_formats.h"

namespace moe {

struct QuantizeCheckpointOptions {
  WeightFormats formats;                   // which classes to quantize, and how
  int64_t shard_bytes = int64_t{4} << 30;  // a new shard once a file would pass this size
  // Called after each tensor is written: (tensors done, tensors in all, bytes written so far).
  std::function<void(int64_t, int64_t, int64_t)> progress;
};

// Writes in_dir's checkpoint to out_dir (created if missing; its files are replaced) with the
// classes options.formats names quantized, one tensor at a time: memory holds one quantized
// tensor, and each source tensor's pages are released once written. Also copies config.json
// (with quantization_config), and the tokenizer and generation files that exist. Fails, naming
// the tensor, on a source that is already quantized or a file that cannot be written.
absl::Status QuantizeCheckpoint(const std::string& in_dir, const std::string& out_dir,
                                const QuantizeCheckpointOptions& options);

}  // namespace moe
