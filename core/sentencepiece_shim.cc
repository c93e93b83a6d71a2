#include "core/sentencepiece_shim.h"

#include <sentencepiece_processor.h>

namespace moe::spm {
namespace {

class SentencePiece : public Processor {
 public:
  std::vector<int> Encode(const std::string& text) const override {
    std::vector<int> ids;
    sp.Encode(text, &ids).IgnoreError();  // fails only on an unloaded model
    return ids;
  }
  std::string Decode(const std::vector<int>& ids) const override {
    std::string text;
    sp.Decode(ids, &text).IgnoreError();
    return text;
  }
  int PieceSize() const override { return sp.GetPieceSize(); }
  int BosId() const override { return sp.bos_id(); }
  int EosId() const override { return sp.eos_id(); }

  sentencepiece::SentencePieceProcessor sp;
};

}  // namespace

std::unique_ptr<Processor> Processor::Load(const std::string& path, std::string* error) {
  auto p = std::make_unique<SentencePiece>();
  const auto status = p->sp.Load(path);
  if (!status.ok()) {
    *error = status.ToString();
    return nullptr;
  }
  return p;
}

}  // namespace moe::spm
