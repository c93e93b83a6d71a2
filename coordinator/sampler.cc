#include "coordinator/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace moe {

absl::Status SamplingParams::Validate() const {
  if (!(temperature >= 0) || !std::isfinite(temperature)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("temperature must be >= 0, got %.9g", temperature));
  }
  if (top_k < 0) return absl::InvalidArgumentError(absl::StrCat("top_k must be >= 0, got ", top_k));
  if (!(top_p > 0 && top_p <= 1)) {
    // Every digit a float holds: a value just past 1 must not print as 1.
    return absl::InvalidArgumentError(absl::StrFormat("top_p must be in (0, 1], got %.9g", top_p));
  }
  return absl::OkStatus();
}

int Sampler::Sample(const float* logits, int64_t vocab) {
  // Non-finite logits would break the ordering below: NaN never wins, +inf takes all the mass.
  bool finite = true;
  for (int64_t i = 0; i < vocab && finite; ++i) finite = std::isfinite(logits[i]);
  if (!finite) {
    int64_t best = -1;
    for (int64_t i = 0; i < vocab; ++i) {
      if (logits[i] == std::numeric_limits<float>::infinity()) return static_cast<int>(i);
      if (!std::isnan(logits[i]) && (best < 0 || logits[i] > logits[best])) best = i;
    }
    if (best < 0) return 0;  // all NaN: nothing to prefer
    clean_.assign(logits, logits + vocab);
    for (float& v : clean_) {
      if (std::isnan(v)) v = -std::numeric_limits<float>::infinity();
    }
    logits = clean_.data();
  }
  if (params_.temperature == 0 || params_.top_k == 1) {
    return static_cast<int>(std::max_element(logits, logits + vocab) - logits);  // first max
  }
  // Candidates by falling logit, ties by id, so the draw below sees one fixed order.
  order_.resize(static_cast<size_t>(vocab));
  std::iota(order_.begin(), order_.end(), 0);
  auto by_logit = [logits](int a, int b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
  int64_t n = vocab;
  if (params_.top_k > 0 && params_.top_k < vocab) {
    n = params_.top_k;
    std::partial_sort(order_.begin(), order_.begin() + n, order_.end(), by_logit);
  } else {
    std::sort(order_.begin(), order_.end(), by_logit);
  }
  sorted_.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) sorted_[i] = logits[order_[i]];
  return Draw(sorted_.data(), order_.data(), n);
}

int64_t Sampler::CandidatesNeeded(int64_t vocab) const {
  if (params_.temperature == 0 || params_.top_k == 1) return 1;
  if (params_.top_k > 0) return std::min<int64_t>(params_.top_k, vocab);
  return 0;
}

int Sampler::SampleFromCandidates(const float* values, const int32_t* ids, int64_t n) {
  if (params_.temperature == 0 || params_.top_k == 1) return ids[0];  // the first max
  if (params_.top_k > 0) n = std::min<int64_t>(n, params_.top_k);
  return Draw(values, ids, n);
}

int Sampler::Draw(const float* values, const int32_t* ids, int64_t n) {
  probs_.resize(static_cast<size_t>(n));
  const double max_logit = values[0];
  double total = 0;
  for (int64_t i = 0; i < n; ++i) {
    probs_[i] = std::exp((values[i] - max_logit) / params_.temperature);
    total += probs_[i];
  }
  if (params_.top_p < 1) {
    double cumulative = 0;
    int64_t keep = 0;
    while (keep < n && cumulative < params_.top_p * total) cumulative += probs_[keep++];
    n = std::max<int64_t>(keep, 1);
    total = cumulative;
  }
  // 53 random bits -> [0, 1): portable, unlike std::uniform_real_distribution.
  const double u = static_cast<double>(rng_() >> 11) * 0x1.0p-53 * total;
  double cumulative = 0;
  for (int64_t i = 0; i < n; ++i) {
    cumulative += probs_[i];
    if (u < cumulative) return ids[i];
  }
  return ids[n - 1];
}

}  // namespace moe
