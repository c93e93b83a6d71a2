#include "core/model/weight_formats.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/base/status_macros.h"

namespace moe {

using kernels::WeightFormat;

absl::StatusOr<WeightFormats> ParseWeightFormats(const std::string& spec) {
  WeightFormats f;
  if (spec.empty() || spec == "none") return f;
  if (spec.find('=') == std::string::npos) {
    absl::StatusOr<WeightFormat> all = kernels::ParseWeightFormat(spec);
    if (!all.ok())
      return absl::InvalidArgumentError(absl::StrCat("--quantize: ", all.status().message()));
    f.experts = *all;
    // int4: only the experts at 4 bits (weight_formats.h says why).
    f.attention = f.lm_head = *all == WeightFormat::kInt4 ? WeightFormat::kInt8 : *all;
    return f;
  }
  for (absl::string_view part : absl::StrSplit(spec, ',')) {
    const std::vector<std::string> kv = absl::StrSplit(part, absl::MaxSplits('=', 1));
    if (kv.size() != 2) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--quantize: '", part, "' is not CLASS=FORMAT (experts, attention, lm_head)"));
    }
    absl::StatusOr<WeightFormat> format = kernels::ParseWeightFormat(kv[1]);
    if (!format.ok())
      return absl::InvalidArgumentError(absl::StrCat("--quantize: ", format.status().message()));
    if (kv[0] == "experts") {
      f.experts = *format;
    } else if (kv[0] == "attention") {
      f.attention = *format;
    } else if (kv[0] == "lm_head") {
      f.lm_head = *format;
    } else {
      return absl::InvalidArgumentError(absl::StrCat("--quantize: unknown tensor class '", kv[0],
                                                     "' (experts, attention or lm_head)"));
    }
  }
  return f;
}

std::string FormatName(WeightFormat format) {
  return format == WeightFormat::kAsStored ? "stored" : kernels::WeightFormatName(format);
}

std::string FormatSpec(const WeightFormats& f) {
  return absl::StrCat("experts=", FormatName(f.experts), ",attention=", FormatName(f.attention),
                      ",lm_head=", FormatName(f.lm_head));
}

}  // namespace moe
