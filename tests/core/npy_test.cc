// The .npy reader: a round trip, and hostile headers refused without overflow or a huge
// allocation.
#include "core/model/npy.h"

#include <cstdio>
#include <fstream>
#include <string>

#include "gtest/gtest.h"

namespace moe {
namespace {

std::string TempPath(const std::string& name) {
  return ::testing::TempDir() + "/" + name;
}

// A version 1 header for a float32 array of `shape` (a Python tuple's text), then `payload`.
void WriteRaw(const std::string& path, const std::string& shape, const std::string& payload) {
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + shape + "), }";
  header.resize(118, ' ');
  header += '\n';
  std::ofstream out(path, std::ios::binary);
  out.write("\x93NUMPY\x01\x00", 8);
  const uint16_t len = static_cast<uint16_t>(header.size());
  out.write(reinterpret_cast<const char*>(&len), 2);
  out << header << payload;
}

TEST(NpyTest, RoundTrip) {
  const std::string path = TempPath("round.npy");
  const float values[6] = {1, 2, 3, 4, 5, 6.5f};
  ASSERT_TRUE(WriteNpy(path, values, {2, 3}).ok());
  absl::StatusOr<NpyArray> a = ReadNpy(path);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(a->data, (std::vector<float>(values, values + 6)));
}

TEST(NpyTest, HostileShapesAreRefused) {
  const std::string path = TempPath("hostile.npy");
  // 2^40 cubed overflows int64: refused before multiplying past it.
  WriteRaw(path, "1099511627776, 1099511627776, 1099511627776", std::string(16, '\0'));
  absl::StatusOr<NpyArray> a = ReadNpy(path);
  EXPECT_EQ(a.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(a.status().message().find("shape too large"), std::string::npos) << a.status();
  // A shape the file does not hold: refused before allocating for it.
  WriteRaw(path, "1000000000,", std::string(16, '\0'));
  a = ReadNpy(path);
  EXPECT_NE(a.status().message().find("truncated data"), std::string::npos) << a.status();
  WriteRaw(path, "4,", std::string(16, '\0'));
  a = ReadNpy(path);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->data.size(), 4u);
}

}  // namespace
}  // namespace moe
