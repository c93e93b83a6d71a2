#include "coordinator/inference/sampler.h"

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
  if (!(repetition_penalty > 0) || !std::isfinite(repetition_penalty)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("repetition_penalty must be > 0 (1: none), got %.9g", repetition_penalty));
  }
  // OpenAI's ranges.
  if (!(frequency_penalty >= -2 && frequency_penalty <= 2)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("frequency_penalty must be in [-2, 2], got %.9g", frequency_penalty));
  }
  if (!(presence_penalty >= -2 && presence_penalty <= 2)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("presence_penalty must be in [-2, 2], got %.9g", presence_penalty));
  }
  return absl::OkStatus();
}

void Sampler::SetPrompt(absl::Span<const int32_t> prompt) {
  // Only the repetition penalty reads the prompt; keep each id once.
  if (params_.repetition_penalty == 1.0f) return;
  prompt_.assign(prompt.begin(), prompt.end());
  std::sort(prompt_.begin(), prompt_.end());
  prompt_.erase(std::unique(prompt_.begin(), prompt_.end()), prompt_.end());
}

void Sampler::Accept(int32_t id) {
  ++accepted_;
  if (params_.has_penalties()) ++generated_[id];
}

void Sampler::Ban(absl::Span<const int32_t> ids, int until) {
  if (!ids.empty() && until > 0) bans_.push_back({{ids.begin(), ids.end()}, until});
}

bool Sampler::processes_logits() const {
  if (params_.has_penalties()) return true;
  return std::any_of(bans_.begin(), bans_.end(),
                     [this](const BanRule& b) { return accepted_ < b.until; });
}

const float* Sampler::Process(const float* logits, int64_t vocab) {
  processed_.assign(logits, logits + vocab);
  float* out = processed_.data();
  const float rp = params_.repetition_penalty;
  if (rp != 1.0f) {
    // Hugging Face's RepetitionPenaltyLogitsProcessor, over the prompt and the output: each token
    // seen once, however often.
    auto penalize = [&](int32_t id) {
      if (id < 0 || id >= vocab) return;
      out[id] = out[id] > 0 ? out[id] / rp : out[id] * rp;
    };
    for (int32_t id : prompt_) penalize(id);
    for (const auto& [id, count] : generated_) {
      if (!std::binary_search(prompt_.begin(), prompt_.end(), id)) penalize(id);
    }
  }
  if (params_.frequency_penalty != 0.0f || params_.presence_penalty != 0.0f) {
    // OpenAI's: logit - count * frequency_penalty - (count > 0) * presence_penalty, over the
    // output.
    for (const auto& [id, count] : generated_) {
      if (id < 0 || id >= vocab) continue;
      out[id] -= static_cast<float>(count) * params_.frequency_penalty + params_.presence_penalty;
    }
  }
  for (const BanRule& b : bans_) {
    if (accepted_ >= b.until) continue;
    for (int32_t id : b.ids) {
      if (id >= 0 && id < vocab) out[id] = -std::numeric_limits<float>::infinity();
    }
  }
  return out;
}

int Sampler::Sample(const float* logits, int64_t vocab) {
  if (processes_logits()) logits = Process(logits, vocab);
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
  auto by_logit = [logits](int a, int b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  };
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
  if (processes_logits()) return 0;
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
