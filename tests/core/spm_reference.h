// libsentencepiece behind a plain interface, as the yardstick for our tokenizer. Only
// spm_reference.cc includes sentencepiece's header: it declares its own absl::string_view, which
// collides with abseil's.
#pragma once

#include <memory>
#include <string>
#include <vector>

namespace moe::testing {

class SentencePieceReference {
 public:
  static std::unique_ptr<SentencePieceReference> Load(const std::string& path);
  virtual ~SentencePieceReference() = default;
  virtual std::vector<int> Encode(const std::string& text) const = 0;
  virtual std::string Decode(const std::vector<int>& ids) const = 0;
};

}  // namespace moe::testing
