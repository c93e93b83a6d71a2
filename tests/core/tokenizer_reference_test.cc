// Our SentencePiece BPE tokenizer against libsentencepiece itself, on hand-picked awkward text and
// on thousands of random strings: every encoding and every decoding must be identical.
// (This binary links libsentencepiece and no gRPC, so their protobuf copies never meet.)
#include <random>
#include <string>
#include <vector>

#include "core/model/tokenizer.h"
#include "gtest/gtest.h"
#include "tests/core/spm_reference.h"

namespace moe {
namespace {

class TokenizerReferenceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto t = Tokenizer::Load(MOE_TOKENIZER_PATH);
    ASSERT_TRUE(t.ok()) << t.status();
    ours_ = std::move(*t);
    ref_ = testing::SentencePieceReference::Load(MOE_TOKENIZER_PATH);
    ASSERT_NE(ref_, nullptr);
  }
  void Check(const std::string& text) {
    const std::vector<int> want = ref_->Encode(text);
    ASSERT_EQ(ours_->Encode(text, /*add_bos=*/false), want) << "text: '" << text << "'";
    ASSERT_EQ(ours_->Decode(want), ref_->Decode(want))
        << "text: '" << text << "', ids: " << ::testing::PrintToString(want);
  }
  std::unique_ptr<Tokenizer> ours_;
  std::unique_ptr<testing::SentencePieceReference> ref_;
};

TEST_F(TokenizerReferenceTest, AwkwardText) {
  for (const char* text :
       {"", " ", "  ", "a", " a", "a ", "  leading and trailing  ", "tab\there", "new\nline\n\n",
        "Hello world", "The quick brown fox jumps over the lazy dog.", "1234567890 3.14159",
        "naïve café — 日本語のテキスト 🙂🚀 done", "𝄞 ꙮ 𓀀 🜁", "<s> </s> <unk> <0x41>",
        "def add(a, b):\n    return a + b", "ÀÁÂÃÄÅ ǅ ﬁ ℌ", "\xEF\xBF\xBD", "...!!!???", "▁▁ ▁x",
        "https://example.com/path?q=1&r=2", "C'est l'été. ¿Qué tal? Привет, мир!"}) {
    Check(text);
  }
}

TEST_F(TokenizerReferenceTest, RandomText) {
  // Random mixes of ASCII, spaces, common and rare Unicode, byte-fallback characters.
  const std::vector<std::string> alphabet = {
      "a", "b", "e", "t", "h", "n", " ", " ", "  ", "\n", ".", ",", "0", "7", "the", "ing", "é",
      "ü", "日", "本", "語", "🙂", "🚀", "𝄞", "ꙮ", "—", "\t", "'", "\"", "(", "▁", "Δ", "ж"};
  std::mt19937 rng(42);
  for (int i = 0; i < 3000; ++i) {
    std::string text;
    const int len = static_cast<int>(rng() % 24);
    for (int k = 0; k < len; ++k) text += alphabet[rng() % alphabet.size()];
    Check(text);
  }
}

TEST_F(TokenizerReferenceTest, DecodesEveryIdAndRandomSequences) {
  for (int id = 0; id < ours_->vocab_size(); ++id) {
    ASSERT_EQ(ours_->Decode({id}), ref_->Decode({id})) << "id " << id;
  }
  std::mt19937 rng(7);
  for (int i = 0; i < 2000; ++i) {
    std::vector<int> ids;
    const int len = 1 + static_cast<int>(rng() % 12);
    // Half the time from the byte pieces, to make partial and invalid UTF-8.
    for (int k = 0; k < len; ++k) ids.push_back(rng() % 2 ? 3 + static_cast<int>(rng() % 256)
                                                          : static_cast<int>(rng() % 32000));
    ASSERT_EQ(ours_->Decode(ids), ref_->Decode(ids)) << "sequence " << i;
  }
}

}  // namespace
}  // namespace moe
