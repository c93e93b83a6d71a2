// Tokenizer: the model's SentencePiece BPE tokenizer, and a detokenizer that streams text piece by
// piece without ever emitting half a UTF-8 character.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "core/model/sentencepiece_model.h"

namespace moe {

// Encodes and decodes exactly as SentencePiece 0.1.x does for BPE models with the identity
// normalizer (Mistral, Mixtral, Llama 2): a dummy-prefix space, spaces as "▁", merges by piece
// score, byte fallback for characters without a piece. Thread-safe (const after Load).
class Tokenizer {
 public:
  // Fails on files that are not SentencePiece models, or use features this encoder lacks
  // (unigram models, non-identity normalisation).
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Load(const std::string& model_path);
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromModel(SentencePieceModel model);

  // Like Hugging Face's LlamaTokenizer: BOS first when add_bos, then the pieces.
  std::vector<int> Encode(const std::string& text, bool add_bos) const;
  // Ids outside the vocabulary are skipped; control tokens (BOS, EOS) decode to nothing.
  std::string Decode(const std::vector<int>& ids) const;
  // One token's own bytes, as log-probability reports name it: spaces for "▁", a byte piece's
  // byte (possibly part of a UTF-8 character), a control token's piece ("</s>").
  std::string TokenBytes(int id) const;
  int vocab_size() const { return static_cast<int>(model_.pieces.size()); }
  bool IsControl(int id) const;  // BOS, EOS: pieces without text
  int bos_id() const { return model_.bos_id; }
  int eos_id() const { return model_.eos_id; }

 private:
  Tokenizer() = default;
  void AppendPiece(const std::string& piece, std::vector<int>* ids) const;

  SentencePieceModel model_;
  absl::flat_hash_map<std::string, int> mergeable_;  // normal pieces -> id: what BPE may form
  int byte_ids_[256] = {};                           // byte value -> <0xXX> piece id
  std::vector<int16_t> byte_of_;                     // [vocab] id -> byte value, -1 if not a byte
};

// Turns a growing list of token ids into text deltas. Decoding ids one at a time is wrong twice
// over: SentencePiece drops the leading space of a lone piece, and byte-fallback pieces (<0xE2>)
// are only text once the whole UTF-8 sequence has arrived. So it decodes a short window of recent
// ids and emits what grew, holding back while the tail is an incomplete character.
class StreamingDetokenizer {
 public:
  // context: ids already shown (the prompt); the last few of them frame the first new pieces, so
  // the first generated word keeps its leading space as it would in the whole text.
  explicit StreamingDetokenizer(const Tokenizer* tokenizer,
                                const std::vector<int32_t>& context = {});

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
