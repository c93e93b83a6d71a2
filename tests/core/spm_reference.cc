#include "tests/core/spm_reference.h"

#include <sentencepiece_processor.h>

namespace moe::testing {
namespace {

class Impl : public SentencePieceReference {
 public:
  std::vector<int> Encode(const std::string& text) const override {
    std::vector<int> ids;
    sp.Encode(text, &ids).IgnoreError();
    return ids;
  }
  std::string Decode(const std::vector<int>& ids) const override {
    std::string text;
    sp.Decode(ids, &text).IgnoreError();
    return text;
  }
  sentencepiece::SentencePieceProcessor sp;
};

}  // namespace

std::unique_ptr<SentencePieceReference> SentencePieceReference::Load(const std::string& path) {
  auto p = std::make_unique<Impl>();
  if (!p->sp.Load(path).ok()) return nullptr;
  return p;
}

}  // namespace moe::testing
