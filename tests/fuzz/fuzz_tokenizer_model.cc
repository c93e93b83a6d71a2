// Fuzz target: tokenizer.model, SentencePiece's protobuf (ParseSentencePieceModel). A model it
// accepts must build a tokenizer that encodes and decodes text without faults.
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/model/sentencepiece_model.h"
#include "core/model/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto model = moe::ParseSentencePieceModel(std::string(reinterpret_cast<const char*>(data), size));
  if (!model.ok()) return 0;
  auto tokenizer = moe::Tokenizer::FromModel(*std::move(model));
  if (!tokenizer.ok()) return 0;
  const std::vector<int> ids =
      (*tokenizer)->Encode("Hello wörld\n  def f(x):\treturn 42 ✓", /*add_bos=*/true);
  (*tokenizer)->Decode(ids);
  return 0;
}
