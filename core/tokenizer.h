// Tokenizer: the model's SentencePiece tokenizer, and a detokenizer that streams text piece by
// piece without ever emitting half a UTF-8 character.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

#include "core/sentencepiece_shim.h"

namespace moe {

class Tokenizer {
 public:
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Load(const std::string& model_path);
  ~Tokenizer();

  // Like Hugging Face's LlamaTokenizer: BOS first when add_bos, then the SentencePiece pieces.
  std::vector<int> Encode(const std::string& text, bool add_bos) const;
  std::string Decode(const std::vector<int>& ids) const;
  int vocab_size() const;
  int bos_id() const;
  int eos_id() const;

 private:
  Tokenizer() = default;
  std::unique_ptr<spm::Processor> sp_;
};

// Turns a growing list of token ids into text deltas. Decoding ids one at a time is wrong twice
// over: SentencePiece drops the leading space of a lone piece, and byte-fallback pieces (<0xE2>)
// are only text once the whole UTF-8 sequence has arrived. So it decodes a short window of recent
// ids and emits what grew, holding back while the tail is an incomplete character.
class StreamingDetokenizer {
 public:
  explicit StreamingDetokenizer(const Tokenizer* tokenizer) : tokenizer_(tokenizer) {}

  // Adds one generated id; returns the text it completes (often empty or several characters).
  std::string Push(int id);
  // Whatever is still held back at the end (an incomplete character decodes as U+FFFD).
  std::string Flush();

 private:
  const Tokenizer* tokenizer_;
  std::vector<int> ids_;
  size_t prefix_offset_ = 0;  // start of the decoding window
  size_t read_offset_ = 0;    // ids before this have been emitted
};

}  // namespace moe
