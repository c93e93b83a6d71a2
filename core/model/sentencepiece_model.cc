#include "core/model/sentencepiece_model.h"

#include <cstdint>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "core/base/status_macros.h"

namespace moe {
namespace {

// Reads protobuf wire format: varints, 32/64-bit fixed, length-delimited.
class WireReader {
 public:
  explicit WireReader(absl::string_view data) : data_(data) {}
  bool done() const { return pos_ >= data_.size(); }

  absl::Status Next(int* field, int* wire_type) {
    uint64_t key;
    MOE_RETURN_IF_ERROR(Varint(&key));
    *field = static_cast<int>(key >> 3);
    *wire_type = static_cast<int>(key & 7);
    return absl::OkStatus();
  }
  absl::Status Varint(uint64_t* v) {
    *v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (pos_ >= data_.size()) return Truncated();
      const uint8_t b = static_cast<uint8_t>(data_[pos_++]);
      *v |= static_cast<uint64_t>(b & 0x7F) << shift;
      if ((b & 0x80) == 0) return absl::OkStatus();
    }
    return absl::InvalidArgumentError("tokenizer model: varint too long");
  }
  absl::Status Bytes(absl::string_view* out) {
    uint64_t n;
    MOE_RETURN_IF_ERROR(Varint(&n));
    if (n > data_.size() - pos_) return Truncated();
    *out = data_.substr(pos_, n);
    pos_ += n;
    return absl::OkStatus();
  }
  absl::Status Fixed32(float* out) {
    if (data_.size() - pos_ < 4) return Truncated();
    std::memcpy(out, data_.data() + pos_, 4);
    pos_ += 4;
    return absl::OkStatus();
  }
  absl::Status Skip(int wire_type) {
    uint64_t v;
    absl::string_view s;
    switch (wire_type) {
      case 0:
        return Varint(&v);
      case 1:
        if (data_.size() - pos_ < 8) return Truncated();
        pos_ += 8;
        return absl::OkStatus();
      case 2:
        return Bytes(&s);
      case 5:
        if (data_.size() - pos_ < 4) return Truncated();
        pos_ += 4;
        return absl::OkStatus();
      default:
        return absl::InvalidArgumentError(
            absl::StrCat("tokenizer model: unsupported wire type ", wire_type));
    }
  }

 private:
  static absl::Status Truncated() {
    return absl::InvalidArgumentError("tokenizer model: truncated data");
  }
  absl::string_view data_;
  size_t pos_ = 0;
};

absl::Status ParsePiece(absl::string_view bytes, SentencePieceModel::Piece* piece) {
  WireReader r(bytes);
  while (!r.done()) {
    int field, type;
    MOE_RETURN_IF_ERROR(r.Next(&field, &type));
    absl::string_view s;
    uint64_t v;
    if (field == 1 && type == 2) {
      MOE_RETURN_IF_ERROR(r.Bytes(&s));
      piece->text = std::string(s);
    } else if (field == 2 && type == 5) {
      MOE_RETURN_IF_ERROR(r.Fixed32(&piece->score));
    } else if (field == 3 && type == 0) {
      MOE_RETURN_IF_ERROR(r.Varint(&v));
      if (v < 1 || v > 6) return absl::InvalidArgumentError("tokenizer model: unknown piece type");
      piece->type = static_cast<SentencePieceModel::PieceType>(v);
    } else {
      MOE_RETURN_IF_ERROR(r.Skip(type));
    }
  }
  return absl::OkStatus();
}

absl::Status ParseTrainerSpec(absl::string_view bytes, SentencePieceModel* m) {
  WireReader r(bytes);
  while (!r.done()) {
    int field, type;
    MOE_RETURN_IF_ERROR(r.Next(&field, &type));
    uint64_t v;
    absl::string_view s;
    if (type == 0 && (field == 3 || field == 35 || field == 24 || (field >= 40 && field <= 42))) {
      MOE_RETURN_IF_ERROR(r.Varint(&v));
      if (field == 3) m->model_type = static_cast<int>(v);
      if (field == 35) m->byte_fallback = v != 0;
      if (field == 24) m->treat_whitespace_as_suffix = v != 0;
      // int32 fields: negative values (-1 = none) arrive as 64-bit two's complement.
      if (field == 40) m->unk_id = static_cast<int32_t>(v);
      if (field == 41) m->bos_id = static_cast<int32_t>(v);
      if (field == 42) m->eos_id = static_cast<int32_t>(v);
    } else if (field == 44 && type == 2) {
      MOE_RETURN_IF_ERROR(r.Bytes(&s));
      m->unk_surface = std::string(s);
    } else {
      MOE_RETURN_IF_ERROR(r.Skip(type));
    }
  }
  return absl::OkStatus();
}

absl::Status ParseNormalizerSpec(absl::string_view bytes, SentencePieceModel* m) {
  WireReader r(bytes);
  while (!r.done()) {
    int field, type;
    MOE_RETURN_IF_ERROR(r.Next(&field, &type));
    uint64_t v;
    absl::string_view s;
    if (type == 2 && (field == 1 || field == 2)) {
      MOE_RETURN_IF_ERROR(r.Bytes(&s));
      if (field == 1) m->normalizer_name = std::string(s);
      if (field == 2) m->has_precompiled_charsmap = !s.empty();
    } else if (type == 0 && field >= 3 && field <= 5) {
      MOE_RETURN_IF_ERROR(r.Varint(&v));
      if (field == 3) m->add_dummy_prefix = v != 0;
      if (field == 4) m->remove_extra_whitespaces = v != 0;
      if (field == 5) m->escape_whitespaces = v != 0;
    } else {
      MOE_RETURN_IF_ERROR(r.Skip(type));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<SentencePieceModel> ParseSentencePieceModel(const std::string& bytes) {
  SentencePieceModel m;
  WireReader r(bytes);
  while (!r.done()) {
    int field, type;
    MOE_RETURN_IF_ERROR(r.Next(&field, &type));
    absl::string_view s;
    if (type == 2 && field >= 1 && field <= 3) {
      MOE_RETURN_IF_ERROR(r.Bytes(&s));
      if (field == 1) {
        m.pieces.emplace_back();
        MOE_RETURN_IF_ERROR(ParsePiece(s, &m.pieces.back()));
      } else if (field == 2) {
        MOE_RETURN_IF_ERROR(ParseTrainerSpec(s, &m));
      } else {
        MOE_RETURN_IF_ERROR(ParseNormalizerSpec(s, &m));
      }
    } else {
      MOE_RETURN_IF_ERROR(r.Skip(type));
    }
  }
  if (m.pieces.empty()) return absl::InvalidArgumentError("tokenizer model: no pieces");
  return m;
}

}  // namespace moe
