#include "coordinator/inference/text_stream.h"

#include <algorithm>

namespace moe {

TextStream::TextStream(const Tokenizer* tokenizer, std::vector<std::string> stop,
                       const std::vector<int32_t>& prompt, int match_after)
    : detok_(tokenizer, prompt), unmatched_(match_after) {
  for (std::string& s : stop) {
    if (s.empty()) continue;
    hold_ = std::max(hold_, s.size() - 1);
    stop_.push_back(std::move(s));
  }
}

std::string TextStream::Push(int token_id) {
  if (stopped_) return "";
  if (unmatched_ > 0) {  // before min_tokens: nothing is held back, nothing matched
    --unmatched_;
    return detok_.Push(token_id);
  }
  pending_ += detok_.Push(token_id);
  // A stop string that completes now lies within the held-back tail plus the new text.
  size_t first = std::string::npos;
  for (const std::string& s : stop_) first = std::min(first, pending_.find(s));
  if (first != std::string::npos) {
    stopped_ = true;
    std::string out = pending_.substr(0, first);
    pending_.clear();
    return out;
  }
  if (pending_.size() <= hold_) return "";
  size_t cut = pending_.size() - hold_;
  // Never split a UTF-8 character: back up over continuation bytes (10xxxxxx).
  while (cut > 0 && (static_cast<unsigned char>(pending_[cut]) & 0xC0) == 0x80) --cut;
  std::string out = pending_.substr(0, cut);
  pending_.erase(0, cut);
  return out;
}

std::string TextStream::Finish() {
  if (stopped_) return "";
  std::string out = pending_ + detok_.Flush();
  pending_.clear();
  // A stop string completed by the flushed tail: cut at the earliest one.
  size_t first = std::string::npos;
  for (const std::string& s : stop_) first = std::min(first, out.find(s));
  if (first != std::string::npos) {
    stopped_ = true;
    out.resize(first);
  }
  return out;
}

}  // namespace moe
