// SafetensorsFile: a memory-mapped .safetensors file whose header has been checked against the
// file, so that every tensor it hands out lies inside the mapping.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace moe {

struct SafetensorsTensor {
  std::string dtype;           // as written: "F32", "BF16", "F16", "I64", ...
  std::vector<int64_t> shape;  // e.g. [14336, 4096]
  const void* data = nullptr;  // inside the mapping; valid while the file lives
  int64_t n_bytes = 0;         // product(shape) * element size
};

class SafetensorsFile {
 public:
  // Maps the file and validates the header: size, JSON, dtypes, shapes, offsets inside the data
  // area, no overlaps. Any violation is an InvalidArgument naming the file and the tensor.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);

  // Same checks on bytes already in memory (tests, fuzzing); the caller keeps `bytes` alive.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> FromBuffer(const void* bytes,
                                                                     int64_t size,
                                                                     const std::string& name);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::map<std::string, SafetensorsTensor>& tensors() const { return tensors_; }
  const SafetensorsTensor* Find(const std::string& name) const;

  // When [data, data + bytes) lies in this file's own mapping, drops the pages that hold nothing
  // else from this process (they fault back in from the file if read again) and returns true.
  // For a caller that copied the bytes elsewhere: the checkpoint then costs no resident memory
  // twice. False, doing nothing, for other memory and for FromBuffer files.
  bool ReleasePages(const void* data, int64_t bytes) const;
  // Maps the pages of [data, data + bytes) in one go, reading them from disk if need be, instead
  // of one page fault at a time (a large cost in a VM). Nothing for memory outside the mapping.
  void PopulatePages(const void* data, int64_t bytes) const;

 private:
  SafetensorsFile() = default;
  absl::Status ParseHeader();

  std::string path_;
  const char* base_ = nullptr;  // start of the file's bytes
  int64_t size_ = 0;
  bool owns_mapping_ = false;
  std::map<std::string, SafetensorsTensor> tensors_;
};

}  // namespace moe
