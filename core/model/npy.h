// Reading and writing float32 (and reading int32) NumPy .npy files (version 1.0, little-endian, C
// order).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace moe {

struct NpyArray {
  std::vector<int64_t> shape;
  std::vector<float> data;  // product(shape) values, C order
};

absl::Status WriteNpy(const std::string& path, const float* data,
                      const std::vector<int64_t>& shape);
absl::StatusOr<NpyArray> ReadNpy(const std::string& path);  // float32 ('<f4') arrays only

struct NpyInt32Array {
  std::vector<int64_t> shape;
  std::vector<int32_t> data;
};
absl::StatusOr<NpyInt32Array> ReadNpyInt32(const std::string& path);  // '<i4' arrays only

}  // namespace moe
