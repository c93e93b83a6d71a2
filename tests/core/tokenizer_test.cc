// The bundled Mixtral tokenizer against the reference encodings Mistral AI and Hugging Face give,
// and streaming detokenisation of multi-byte characters.
#include "core/model/tokenizer.h"

#include "gtest/gtest.h"

namespace moe {
namespace {

std::unique_ptr<Tokenizer> Load() {
  auto t = Tokenizer::Load(MOE_TOKENIZER_PATH);
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? std::move(*t) : nullptr;
}

TEST(TokenizerTest, MatchesReferenceEncodings) {
  auto t = Load();
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->vocab_size(), 32000);
  EXPECT_EQ(t->bos_id(), 1);
  EXPECT_EQ(t->eos_id(), 2);
  EXPECT_EQ(t->Encode("Hello world", false), (std::vector<int>{22557, 1526}));
  EXPECT_EQ(t->Encode("Hello world", true), (std::vector<int>{1, 22557, 1526}));
  EXPECT_EQ(t->Encode("The quick brown fox jumps over the lazy dog.", false),
            (std::vector<int>{415, 2936, 9060, 285, 1142, 461, 10575, 754, 272, 17898, 3914, 28723}));
  EXPECT_EQ(t->Encode("def add(a, b):\n    return a + b", false),
            (std::vector<int>{801, 967, 28732, 28708, 28725, 287, 1329, 13, 2287, 604, 264, 648, 287}));
}

std::string StreamAll(const Tokenizer& t, const std::vector<int>& ids, std::vector<std::string>* deltas) {
  StreamingDetokenizer d(&t);
  std::string out;
  for (int id : ids) {
    deltas->push_back(d.Push(id));
    out += deltas->back();
  }
  return out + d.Flush();
}

TEST(TokenizerTest, StreamingEqualsWholeDecode) {
  auto t = Load();
  ASSERT_NE(t, nullptr);
  for (const std::string text : {"Hello world, how are you?", "  leading spaces and\nnewlines\n",
                                 "naïve café — 日本語 🙂🚀 done", "x"}) {
    const std::vector<int> ids = t->Encode(text, false);
    std::vector<std::string> deltas;
    EXPECT_EQ(StreamAll(*t, ids, &deltas), t->Decode(ids)) << text;
    for (const std::string& d : deltas) {
      EXPECT_EQ(d.find("\xEF\xBF\xBD"), std::string::npos) << "half a character escaped: " << text;
    }
  }
}

TEST(TokenizerTest, ByteFallbackWaitsForWholeCharacter) {
  auto t = Load();
  ASSERT_NE(t, nullptr);
  // A character with no piece of its own encodes as byte-fallback pieces, one per UTF-8 byte.
  std::string ch;
  std::vector<int> ids;
  for (const char* candidate : {"𝄞", "🦜", "ꙮ", "𓀀", "🜁"}) {
    ids = t->Encode(candidate, false);
    if (ids.size() >= 4) {
      ch = candidate;
      break;
    }
  }
  ASSERT_FALSE(ch.empty()) << "no byte-fallback character among the candidates";
  std::vector<std::string> deltas;
  const std::string all = StreamAll(*t, ids, &deltas);
  EXPECT_EQ(all, t->Decode(ids));
  EXPECT_NE(all.find(ch), std::string::npos);
  for (size_t i = 0; i + 1 < deltas.size(); ++i) EXPECT_EQ(deltas[i], "") << i;
}

TEST(TokenizerTest, MissingModelIsAnError) {
  EXPECT_FALSE(Tokenizer::Load("/nonexistent/tokenizer.model").ok());
}

}  // namespace
}  // namespace moe
