#include "core/model/tokenizer.h"

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <queue>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/strip.h"
#include "core/model/utf8.h"

namespace moe {

namespace {

constexpr char kSpaceSymbol[] = "\xE2\x96\x81";  // U+2581 "▁"
constexpr char kReplacement[] = "\xEF\xBF\xBD";  // U+FFFD

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Load(const std::string& model_path) {
  std::ifstream in(model_path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open tokenizer ", model_path));
  std::stringstream ss;
  ss << in.rdbuf();
  auto model = ParseSentencePieceModel(ss.str());
  if (!model.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(model_path, ": ", model.status().message()));
  }
  auto t = FromModel(*std::move(model));
  if (!t.ok())
    return absl::InvalidArgumentError(absl::StrCat(model_path, ": ", t.status().message()));
  return t;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromModel(SentencePieceModel model) {
  if (model.model_type != 2) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer model type ", model.model_type,
                                                   " is not supported (only BPE, type 2)"));
  }
  if (model.has_precompiled_charsmap || (model.normalizer_name != "identity")) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tokenizer normalisation '", model.normalizer_name, "' is not supported (only identity)"));
  }
  if (model.treat_whitespace_as_suffix) {
    return absl::InvalidArgumentError(
        "tokenizers that treat whitespace as a suffix are not supported");
  }
  const int n = static_cast<int>(model.pieces.size());
  for (int id : {model.unk_id, model.bos_id, model.eos_id}) {
    if (id < 0 || id >= n)
      return absl::InvalidArgumentError("tokenizer special ids outside the vocabulary");
  }
  auto t = std::unique_ptr<Tokenizer>(new Tokenizer());
  for (int& b : t->byte_ids_) b = -1;
  t->byte_of_.assign(static_cast<size_t>(n), -1);
  for (int id = 0; id < n; ++id) {
    const SentencePieceModel::Piece& p = model.pieces[id];
    using Type = SentencePieceModel::PieceType;
    if (p.type == Type::kNormal) {
      t->mergeable_.emplace(p.text, id);
    } else if (p.type == Type::kByte) {
      unsigned value;
      if (p.text.size() != 6 || std::sscanf(p.text.c_str(), "<0x%2X>", &value) != 1 ||
          value > 255) {
        return absl::InvalidArgumentError(
            absl::StrCat("byte piece ", id, " is not of the form <0xXX>"));
      }
      t->byte_ids_[value] = id;
      t->byte_of_[id] = static_cast<int16_t>(value);
    } else if (p.type == Type::kUserDefined || p.type == Type::kUnused) {
      // SentencePiece matches user-defined pieces whole and re-splits unused ones; this encoder
      // does neither, so it refuses such models rather than encode them differently.
      return absl::InvalidArgumentError(
          "tokenizers with user-defined or unused pieces are not supported");
    }
  }
  if (model.byte_fallback) {
    for (int b : t->byte_ids_) {
      if (b < 0)
        return absl::InvalidArgumentError("byte fallback is on but a <0xXX> piece is missing");
    }
  }
  t->model_ = std::move(model);
  return t;
}

void Tokenizer::AppendPiece(const std::string& piece, std::vector<int>* ids) const {
  auto it = mergeable_.find(piece);
  if (it != mergeable_.end()) {
    ids->push_back(it->second);
  } else if (model_.byte_fallback) {
    for (unsigned char c : piece) ids->push_back(byte_ids_[c]);
  } else {
    ids->push_back(model_.unk_id);
  }
}

std::vector<int> Tokenizer::Encode(const std::string& input, bool add_bos) const {
  std::vector<int> ids;
  if (add_bos) ids.push_back(bos_id());
  // Normalisation (identity): optional whitespace clean-up, the dummy prefix, spaces as "▁".
  std::string text = input;
  if (model_.remove_extra_whitespaces) {
    std::string cleaned;
    for (char c : text) {
      if (c == ' ' && (cleaned.empty() || cleaned.back() == ' ')) continue;
      cleaned.push_back(c);
    }
    while (!cleaned.empty() && cleaned.back() == ' ') cleaned.pop_back();
    text = cleaned;
  }
  if (text.empty()) return ids;
  std::string normalized;
  if (model_.add_dummy_prefix) normalized = model_.escape_whitespaces ? kSpaceSymbol : " ";
  for (char c : text) {
    if (c == ' ' && model_.escape_whitespaces) {
      normalized += kSpaceSymbol;
    } else {
      normalized.push_back(c);
    }
  }

  // BPE, as SentencePiece's bpe_model.cc: start from characters, repeatedly merge the adjacent
  // pair that forms the highest-scoring piece (leftmost first on ties).
  struct Symbol {
    int prev, next;
    std::string piece;
  };
  std::vector<Symbol> symbols;
  for (size_t i = 0; i < normalized.size();) {
    const size_t len = std::max<size_t>(1, Utf8CharLength(normalized, i));  // a stray byte alone
    symbols.push_back({static_cast<int>(symbols.size()) - 1, static_cast<int>(symbols.size()) + 1,
                       normalized.substr(i, len)});
    i += len;
  }
  symbols.back().next = -1;
  struct Pair {
    float score;
    int left, right;
    size_t size;
  };
  auto lower_priority = [](const Pair& a, const Pair& b) {
    return a.score < b.score || (a.score == b.score && a.left > b.left);
  };
  std::priority_queue<Pair, std::vector<Pair>, decltype(lower_priority)> agenda(lower_priority);
  auto maybe_add = [&](int left, int right) {
    if (left < 0 || right < 0) return;
    const std::string merged = symbols[left].piece + symbols[right].piece;
    auto it = mergeable_.find(merged);
    if (it == mergeable_.end()) return;
    agenda.push(Pair{model_.pieces[it->second].score, left, right, merged.size()});
  };
  for (size_t i = 1; i < symbols.size(); ++i)
    maybe_add(static_cast<int>(i) - 1, static_cast<int>(i));
  while (!agenda.empty()) {
    const Pair top = agenda.top();
    agenda.pop();
    Symbol& l = symbols[top.left];
    Symbol& r = symbols[top.right];
    // Stale: one side was merged away or changed since this pair was queued.
    if (l.piece.empty() || r.piece.empty() || l.piece.size() + r.piece.size() != top.size) continue;
    l.piece += r.piece;
    r.piece.clear();
    l.next = r.next;
    if (r.next >= 0) symbols[r.next].prev = top.left;
    maybe_add(l.prev, top.left);
    maybe_add(top.left, l.next);
  }
  for (int i = 0; i >= 0; i = symbols[i].next) AppendPiece(symbols[i].piece, &ids);
  return ids;
}

std::string Tokenizer::TokenBytes(int id) const {
  if (id < 0 || id >= vocab_size()) return "";
  const SentencePieceModel::Piece& p = model_.pieces[id];
  using Type = SentencePieceModel::PieceType;
  if (p.type == Type::kByte) return std::string(1, static_cast<char>(byte_of_[id]));
  if (p.type == Type::kUnknown) return model_.unk_surface;
  if (p.type == Type::kControl) return p.text;
  return absl::StrReplaceAll(p.text, {{"\xE2\x96\x81", " "}});
}

std::string Tokenizer::Decode(const std::vector<int>& ids) const {
  std::string text;
  std::string bytes;  // a run of byte pieces, decoded together
  auto flush_bytes = [&] {
    for (size_t i = 0; i < bytes.size();) {
      const size_t len = Utf8CharLength(bytes, i);
      if (len == 0) {
        text += kReplacement;  // one U+FFFD per byte that is not part of a character
        ++i;
      } else {
        text.append(bytes, i, len);
        i += len;
      }
    }
    bytes.clear();
  };
  using Type = SentencePieceModel::PieceType;
  bool first = true;  // no piece with a surface seen yet: the dummy prefix is still to be removed
  for (int id : ids) {
    if (id < 0 || id >= vocab_size()) continue;
    const SentencePieceModel::Piece& p = model_.pieces[id];
    if (p.type == Type::kControl) continue;  // BOS, EOS: no surface, and not "first"
    if (p.type == Type::kByte) {
      bytes.push_back(static_cast<char>(byte_of_[id]));
      first = false;
      continue;
    }
    flush_bytes();
    if (p.type == Type::kUnknown) {
      text += model_.unk_surface;
      first = false;
      continue;
    }
    absl::string_view piece = p.text;
    // The dummy prefix: the first piece of the text loses its leading space (once).
    if (first && (model_.add_dummy_prefix || model_.remove_extra_whitespaces)) {
      absl::ConsumePrefix(&piece, kSpaceSymbol);
    }
    first = false;
    text += absl::StrReplaceAll(piece, {{kSpaceSymbol, " "}});
  }
  flush_bytes();
  return text;
}

namespace {

bool EndsWithReplacement(const std::string& s) {
  return s.size() >= 3 && s.compare(s.size() - 3, 3, kReplacement) == 0;
}
}  // namespace

bool Tokenizer::IsControl(int id) const {
  return id >= 0 && id < vocab_size() &&
         model_.pieces[id].type == SentencePieceModel::PieceType::kControl;
}

StreamingDetokenizer::StreamingDetokenizer(const Tokenizer* tokenizer,
                                           const std::vector<int32_t>& context)
    : tokenizer_(tokenizer) {
  // A few trailing context ids are enough to frame the next piece; control ids (BOS) add nothing
  // and would make the window start "at the beginning of the text".
  constexpr size_t kContext = 6;
  for (size_t i = context.size() > kContext ? context.size() - kContext : 0; i < context.size();
       ++i) {
    if (!tokenizer_->IsControl(context[i])) ids_.push_back(context[i]);
  }
  read_offset_ = ids_.size();
}

std::string StreamingDetokenizer::Push(int id) {
  ids_.push_back(id);
  const std::vector<int> before(ids_.begin() + prefix_offset_, ids_.begin() + read_offset_);
  const std::vector<int> after(ids_.begin() + prefix_offset_, ids_.end());
  const std::string prefix_text = tokenizer_->Decode(before);
  const std::string new_text = tokenizer_->Decode(after);
  if (new_text.size() <= prefix_text.size() || EndsWithReplacement(new_text)) return "";
  // Decoding a window that starts mid-text still drops the window's own leading space; the
  // difference between two decodes of the same window keeps every space after it.
  std::string delta = new_text.substr(prefix_text.size());
  prefix_offset_ = read_offset_;
  read_offset_ = ids_.size();
  return delta;
}

std::string StreamingDetokenizer::Flush() {
  if (read_offset_ == ids_.size()) return "";
  const std::vector<int> before(ids_.begin() + prefix_offset_, ids_.begin() + read_offset_);
  const std::vector<int> after(ids_.begin() + prefix_offset_, ids_.end());
  const std::string prefix_text = tokenizer_->Decode(before);
  const std::string new_text = tokenizer_->Decode(after);
  read_offset_ = ids_.size();
  return new_text.size() > prefix_text.size() ? new_text.substr(prefix_text.size()) : "";
}

}  // namespace moe
