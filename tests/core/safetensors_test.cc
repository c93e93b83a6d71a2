// The safetensors reader against valid, truncated and hostile files: every bad header must be a
// clean error, never an out-of-bounds read (the sanitizer build runs these too).
#include "core/model/safetensors.h"

#include <cstring>
#include <fstream>
#include <string>

#include "gtest/gtest.h"

namespace moe {
namespace {

// 8-byte length + header + data.
std::string File(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  const uint64_t n = header.size();
  std::memcpy(out.data(), &n, 8);
  return out + header + data;
}

absl::Status Parse(const std::string& bytes) {
  return SafetensorsFile::FromBuffer(bytes.data(), static_cast<int64_t>(bytes.size()), "test").status();
}

void ExpectInvalid(const std::string& bytes, const std::string& fragment) {
  const absl::Status s = Parse(bytes);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(s.message()).find(fragment), std::string::npos) << s;
}

TEST(SafetensorsTest, ReadsValidFile) {
  const std::string data(4 * 6 + 2 * 2, 'x');
  const std::string bytes = File(
      R"({"__metadata__": {"format": "pt"}, "a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},)"
      R"( "b": {"dtype": "BF16", "shape": [2], "data_offsets": [24, 28]}})",
      data);
  auto f = SafetensorsFile::FromBuffer(bytes.data(), static_cast<int64_t>(bytes.size()), "t");
  ASSERT_TRUE(f.ok()) << f.status();
  const SafetensorsTensor* a = (*f)->Find("a");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(a->n_bytes, 24);
  EXPECT_EQ(static_cast<const char*>((*f)->Find("b")->data) - static_cast<const char*>(a->data), 24);
  EXPECT_EQ((*f)->Find("c"), nullptr);
}

TEST(SafetensorsTest, RejectsTruncatedAndHostileHeaders) {
  ExpectInvalid("", "shorter than");
  ExpectInvalid("abc", "shorter than");
  std::string huge(8, '\0');
  const uint64_t big = uint64_t{1} << 60;
  std::memcpy(huge.data(), &big, 8);
  ExpectInvalid(huge, "absurd");
  std::string past = File("{}", "");
  const uint64_t longer = 1000;
  std::memcpy(past.data(), &longer, 8);
  ExpectInvalid(past, "runs past the end");
  ExpectInvalid(File("{not json", ""), "not valid JSON");
  ExpectInvalid(File("[]", ""), "not a JSON object");
  ExpectInvalid(File(R"({"a": 5})", ""), "not an object");
  ExpectInvalid(File(R"({"a": {"shape": [1], "data_offsets": [0, 4]}})", "xxxx"), "missing dtype");
  ExpectInvalid(File(R"({"a": {"dtype": "Q4", "shape": [1], "data_offsets": [0, 4]}})", "xxxx"), "unknown dtype");
  ExpectInvalid(File(R"({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}})", "xxxx"), "bad dimension");
  ExpectInvalid(File(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0]}})", "xxxx"), "data_offsets");
  ExpectInvalid(File(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [-4, 0]}})", "xxxx"), "non-negative");
  ExpectInvalid(File(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}})", "xxxx"), "begin after");
  ExpectInvalid(File(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})", "xxxx"), "run past the data");
  ExpectInvalid(File(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}})", "xxxx"), "need 8 bytes");
  // Dimensions whose product wraps around 2^64 to a small number.
  ExpectInvalid(File(R"({"a": {"dtype": "F32", "shape": [4294967296, 4294967296, 4], "data_offsets": [0, 4]}})", "xxxx"),
                "absurdly large");
  ExpectInvalid(File(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},)"
                     R"( "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})",
                     std::string(8, 'x')),
                "overlap");
  // An empty tensor between two overlapping ones must not hide the overlap.
  ExpectInvalid(File(R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},)"
                     R"( "e": {"dtype": "F32", "shape": [0], "data_offsets": [8, 8]},)"
                     R"( "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}})",
                     std::string(16, 'x')),
                "overlap");
  // Nested inside a long tensor, not adjacent to it in sorted order.
  ExpectInvalid(File(R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},)"
                     R"( "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]},)"
                     R"( "c": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}})",
                     std::string(16, 'x')),
                "overlap");
}

TEST(SafetensorsTest, OpenReportsMissingAndMapsRealFiles) {
  EXPECT_EQ(SafetensorsFile::Open("/nonexistent.safetensors").status().code(), absl::StatusCode::kNotFound);
  const std::string path = ::testing::TempDir() + "/t.safetensors";
  {
    std::ofstream out(path, std::ios::binary);
    out << File(R"({"w": {"dtype": "F16", "shape": [3], "data_offsets": [0, 6]}})", "abcdef");
  }
  auto f = SafetensorsFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(std::memcmp((*f)->Find("w")->data, "abcdef", 6), 0);
}

}  // namespace
}  // namespace moe
