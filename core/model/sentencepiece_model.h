// SentencePieceModel: the contents of a SentencePiece tokenizer.model (a serialized ModelProto),
// read with a small protobuf wire-format parser of our own.
//
// Why not libsentencepiece: Debian's build carries a private copy of protobuf 3.14 whose symbols
// collide with the system protobuf 3.21 that gRPC loads, and the process aborts at start-up when
// both are present. The encoder (core/model/tokenizer.cc) is ours; tests/core/tokenizer_test.cc
// holds it to libsentencepiece itself, in a binary that does not load gRPC.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace moe {

struct SentencePieceModel {
  enum class PieceType {
    kNormal = 1,
    kUnknown = 2,
    kControl = 3,
    kUserDefined = 4,
    kUnused = 5,
    kByte = 6
  };
  struct Piece {
    std::string text;  // e.g. "▁the", "<0x0A>"
    float score = 0;   // BPE merge priority: higher merges first
    PieceType type = PieceType::kNormal;
  };
  std::vector<Piece> pieces;  // [vocab], index = token id
  // trainer_spec
  int model_type = 1;          // 1 unigram, 2 BPE, 3 word, 4 char
  bool byte_fallback = false;  // unknown characters become <0xXX> byte pieces
  bool treat_whitespace_as_suffix = false;
  std::string unk_surface = " \xE2\x81\x87 ";  // " ⁇ ", what <unk> decodes to
  int unk_id = 0;
  int bos_id = 1;
  int eos_id = 2;
  // normalizer_spec (proto2 defaults apply when a field is absent)
  std::string normalizer_name = "nmt_nfkc";
  bool add_dummy_prefix = true;  // a space before the text, as SentencePiece does
  bool remove_extra_whitespaces = true;
  bool escape_whitespaces = true;  // spaces become U+2581 "▁"
  bool has_precompiled_charsmap = false;
};

// Parses a serialized ModelProto. Fails on malformed data (truncated fields, bad lengths).
absl::StatusOr<SentencePieceModel> ParseSentencePieceModel(const std::string& bytes);

}  // namespace moe
