// TextStream: one sequence's generated text as it should reach a client: streamed piece by
// piece, never half a UTF-8 character, cut at the first stop string (which is not returned).
#pragma once

#include <string>
#include <vector>

#include "core/model/tokenizer.h"

namespace moe {

class TextStream {
 public:
  // tokenizer: not owned; stop: strings that end the generation (empty ones are ignored);
  // prompt: the ids before the generated ones, so the first generated piece keeps its space;
  // match_after: stop strings are looked for only in the text of tokens after the first this many
  // (a request's min_tokens, as vLLM does).
  TextStream(const Tokenizer* tokenizer, std::vector<std::string> stop,
             const std::vector<int32_t>& prompt = {}, int match_after = 0);

  // Adds a generated token; returns the text that may be sent now. Text that could still turn
  // out to start a stop string is held back until it cannot.
  std::string Push(int token_id);
  // True once a stop string has appeared; the text before it has been returned.
  bool stopped() const { return stopped_; }
  // The text still held back, at the end of the generation (empty after a stop).
  std::string Finish();

 private:
  StreamingDetokenizer detok_;
  std::vector<std::string> stop_;
  size_t hold_ = 0;      // longest stop string - 1
  std::string pending_;  // decoded, not yet returned
  bool stopped_ = false;
  int unmatched_ = 0;  // tokens still to pass before stop strings count
};

}  // namespace moe
