#include "core/model/npy.h"

#include <cstring>
#include <fstream>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace moe {

absl::Status WriteNpy(const std::string& path, const float* data,
                      const std::vector<int64_t>& shape) {
  std::string dims = absl::StrJoin(shape, ", ");
  if (shape.size() == 1) dims += ",";
  std::string header =
      absl::StrCat("{'descr': '<f4', 'fortran_order': False, 'shape': (", dims, "), }");
  // Magic (6) + version (2) + length (2) + header + '\n' is padded to a multiple of 64.
  const size_t unpadded = 10 + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');
  header.push_back('\n');
  std::ofstream out(path, std::ios::binary);
  if (!out) return absl::PermissionDeniedError(absl::StrCat("cannot write ", path));
  out.write("\x93NUMPY\x01\x00", 8);
  const uint16_t len = static_cast<uint16_t>(header.size());
  out.write(reinterpret_cast<const char*>(&len), 2);
  out.write(header.data(), static_cast<std::streamsize>(header.size()));
  int64_t count = 1;
  for (int64_t d : shape) count *= d;
  out.write(reinterpret_cast<const char*>(data),
            static_cast<std::streamsize>(count * sizeof(float)));
  if (!out) return absl::DataLossError(absl::StrCat("short write to ", path));
  return absl::OkStatus();
}

namespace {

// Reads the header and data of a C-order .npy file whose dtype is `descr` (e.g. "<f4").
template <typename T>
absl::Status ReadNpyTyped(const std::string& path, const char* descr, std::vector<int64_t>* shape,
                          std::vector<T>* data) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  char magic[8];
  uint16_t len = 0;
  if (!in.read(magic, 8) || std::memcmp(magic, "\x93NUMPY\x01", 7) != 0 ||
      !in.read(reinterpret_cast<char*>(&len), 2)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a version 1 .npy file"));
  }
  std::string header(len, '\0');
  if (!in.read(header.data(), len))
    return absl::InvalidArgumentError(absl::StrCat(path, ": truncated header"));
  if (header.find(absl::StrCat("'descr': '", descr, "'")) == std::string::npos ||
      header.find("'fortran_order': False") == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": expected a C-order ", descr, " array"));
  }
  const size_t open = header.find("'shape': (");
  const size_t close = header.find(')', open);
  if (open == std::string::npos || close == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": no shape in header"));
  }
  int64_t count = 1;
  const std::string dims = header.substr(open + 10, close - open - 10);
  for (absl::string_view part : absl::StrSplit(dims, ',', absl::SkipWhitespace())) {
    int64_t d;
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(part), &d) || d < 0 ||
        d > (int64_t{1} << 40)) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": bad shape"));
    }
    shape->push_back(d);
    // A hostile shape must neither overflow the product nor allocate more than the file holds.
    if (d != 0 && count > (int64_t{1} << 40) / d) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": shape too large"));
    }
    count *= d;
  }
  const std::streampos data_start = in.tellg();
  in.seekg(0, std::ios::end);
  const int64_t available = static_cast<int64_t>(in.tellg() - data_start);
  in.seekg(data_start);
  if (count > available / static_cast<int64_t>(sizeof(T))) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": truncated data (shape needs ", count, " elements)"));
  }
  data->resize(static_cast<size_t>(count));
  if (!in.read(reinterpret_cast<char*>(data->data()),
               static_cast<std::streamsize>(count * sizeof(T)))) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": truncated data"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<NpyArray> ReadNpy(const std::string& path) {
  NpyArray a;
  absl::Status s = ReadNpyTyped(path, "<f4", &a.shape, &a.data);
  if (!s.ok()) return s;
  return a;
}

absl::StatusOr<NpyInt32Array> ReadNpyInt32(const std::string& path) {
  NpyInt32Array a;
  absl::Status s = ReadNpyTyped(path, "<i4", &a.shape, &a.data);
  if (!s.ok()) return s;
  return a;
}

}  // namespace moe
