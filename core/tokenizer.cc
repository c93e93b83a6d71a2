#include "core/tokenizer.h"

#include "absl/strings/str_cat.h"

namespace moe {

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Load(const std::string& model_path) {
  auto t = std::unique_ptr<Tokenizer>(new Tokenizer());
  std::string error;
  t->sp_ = spm::Processor::Load(model_path, &error);
  if (t->sp_ == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("cannot load tokenizer ", model_path, ": ", error));
  }
  return t;
}

Tokenizer::~Tokenizer() = default;

std::vector<int> Tokenizer::Encode(const std::string& text, bool add_bos) const {
  std::vector<int> ids;
  if (add_bos) ids.push_back(bos_id());
  const std::vector<int> pieces = sp_->Encode(text);
  ids.insert(ids.end(), pieces.begin(), pieces.end());
  return ids;
}

std::string Tokenizer::Decode(const std::vector<int>& ids) const {
  std::vector<int> valid;
  valid.reserve(ids.size());
  for (int id : ids) {
    if (id >= 0 && id < vocab_size()) valid.push_back(id);
  }
  return sp_->Decode(valid);
}

int Tokenizer::vocab_size() const { return sp_->PieceSize(); }
int Tokenizer::bos_id() const { return sp_->BosId(); }
int Tokenizer::eos_id() const { return sp_->EosId(); }

namespace {
// U+FFFD, what SentencePiece yields for bytes that do not (yet) form a character.
constexpr char kReplacement[] = "\xEF\xBF\xBD";

bool EndsWithReplacement(const std::string& s) {
  return s.size() >= 3 && s.compare(s.size() - 3, 3, kReplacement) == 0;
}
}  // namespace

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
