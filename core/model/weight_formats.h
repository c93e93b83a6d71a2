// WeightFormats: which tensor classes a process holds quantized (kernels/quant.h), as every
// program's --quantize flag chooses. The router and the embedding lookup always stay as stored:
// the router must not flip choices on rounding, and a lookup reads one row per token.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "kernels/quant.h"

namespace moe {

struct WeightFormats {
  kernels::WeightFormat experts = kernels::WeightFormat::kAsStored;    // every expert's w1, w2, w3
  kernels::WeightFormat attention = kernels::WeightFormat::kAsStored;  // q, k, v, o projections
  kernels::WeightFormat lm_head = kernels::WeightFormat::kAsStored;    // the output layer

  bool any_quantized() const {
    return experts != kernels::WeightFormat::kAsStored ||
           attention != kernels::WeightFormat::kAsStored ||
           lm_head != kernels::WeightFormat::kAsStored;
  }
};

// --quantize's value:
//   "" or "none"  every class as stored
//   "int8"        every class INT8
//   "int4"        experts INT4, attention and lm_head INT8: on the demo model's held-out Python
//                 this costs 0.15% of perplexity, as llama.cpp's Q4_K_M costs 0.17% (which keeps
//                 its output layer and some attention at Q6_K); attention at INT4 too costs
//                 0.28% for 6% fewer bytes a token, INT4 lm_head 1.8% (README, "Quantized weights")
//   "experts=int4,attention=int8,lm_head=stored"  class by class; classes not named stay as stored
// The error names the part it could not read.
absl::StatusOr<WeightFormats> ParseWeightFormats(const std::string& spec);

// "stored", "int8" or "int4": a format as --quantize and quantization_config spell it.
std::string FormatName(kernels::WeightFormat format);
// "experts=int4,attention=int4,lm_head=int8": the spec that gives these formats back.
std::string FormatSpec(const WeightFormats& formats);

}  // namespace moe
