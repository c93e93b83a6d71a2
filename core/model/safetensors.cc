#include "core/model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/base/status_macros.h"
#include "nlohmann/json.hpp"

namespace moe {
namespace {

using nlohmann::json;

// Real headers are a few hundred KB even for 1000-tensor shards; anything far larger is hostile.
constexpr int64_t kMaxHeaderBytes = 100 << 20;

int64_t ElementSize(const std::string& dtype) {
  static const std::map<std::string, int64_t> sizes = {
      {"F64", 8}, {"I64", 8}, {"U64", 8},  {"F32", 4},     {"I32", 4},
      {"U32", 4}, {"F16", 2}, {"BF16", 2}, {"I16", 2},     {"U16", 2},
      {"I8", 1},  {"U8", 1},  {"BOOL", 1}, {"F8_E4M3", 1}, {"F8_E5M2", 1}};
  auto it = sizes.find(dtype);
  return it == sizes.end() ? 0 : it->second;
}

}  // namespace

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return absl::NotFoundError(absl::StrCat("cannot open ", path, ": ", std::strerror(errno)));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a regular file"));
  }
  auto file = std::unique_ptr<SafetensorsFile>(new SafetensorsFile());
  file->path_ = path;
  file->size_ = st.st_size;
  if (st.st_size > 0) {
    void* p = ::mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      ::close(fd);
      return absl::InternalError(absl::StrCat(path, ": mmap failed: ", std::strerror(errno)));
    }
    file->base_ = static_cast<const char*>(p);
    file->owns_mapping_ = true;
  }
  ::close(fd);  // the mapping stays valid
  MOE_RETURN_IF_ERROR(file->ParseHeader());
  return file;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::FromBuffer(
    const void* bytes, int64_t size, const std::string& name) {
  auto file = std::unique_ptr<SafetensorsFile>(new SafetensorsFile());
  file->path_ = name;
  file->base_ = static_cast<const char*>(bytes);
  file->size_ = size;
  MOE_RETURN_IF_ERROR(file->ParseHeader());
  return file;
}

SafetensorsFile::~SafetensorsFile() {
  if (owns_mapping_) ::munmap(const_cast<char*>(base_), static_cast<size_t>(size_));
}

const SafetensorsTensor* SafetensorsFile::Find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

bool SafetensorsFile::ReleasePages(const void* data, int64_t bytes) const {
  const char* p = static_cast<const char*>(data);
  if (!owns_mapping_ || p < base_ || bytes < 0 || p + bytes > base_ + size_) return false;
  // Only whole pages inside the range: a page shared with a neighbouring tensor stays.
  const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(p) + page - 1) / page * page;
  const uintptr_t end =
      (reinterpret_cast<uintptr_t>(p) + static_cast<uintptr_t>(bytes)) / page * page;
  // A private read-only file mapping: MADV_DONTNEED discards no data, only this mapping of it.
  if (end > begin) ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
  return true;
}

void SafetensorsFile::PopulatePages(const void* data, int64_t bytes) const {
  const char* p = static_cast<const char*>(data);
  if (!owns_mapping_ || p < base_ || bytes <= 0 || p + bytes > base_ + size_) return;
  const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t begin = reinterpret_cast<uintptr_t>(p) / page * page;
  // Advice: a kernel before 5.14 answers EINVAL, and the pages then fault in when read.
  ::madvise(reinterpret_cast<void*>(begin), reinterpret_cast<uintptr_t>(p) + bytes - begin,
            MADV_POPULATE_READ);
}

absl::Status SafetensorsFile::ParseHeader() {
  auto bad = [this](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat(path_, ": invalid safetensors file: ", what));
  };
  if (size_ < 8)
    return bad(absl::StrCat("file is ", size_, " bytes, shorter than the 8-byte header length"));
  uint64_t header_len = 0;
  std::memcpy(&header_len, base_, 8);  // little-endian on every platform we build for
  if (header_len > static_cast<uint64_t>(kMaxHeaderBytes)) {
    return bad(absl::StrCat("header length ", header_len, " is absurd"));
  }
  if (header_len > static_cast<uint64_t>(size_ - 8)) {
    return bad(absl::StrCat("header length ", header_len, " runs past the end of the file (", size_,
                            " bytes): truncated?"));
  }
  const char* header = base_ + 8;
  const json j = json::parse(header, header + header_len, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return bad("header is not valid JSON");
  if (!j.is_object()) return bad("header is not a JSON object");

  const char* data = header + header_len;
  const int64_t data_size = size_ - 8 - static_cast<int64_t>(header_len);
  std::vector<std::pair<int64_t, int64_t>> ranges;  // [begin, end) of every tensor, for overlaps
  std::vector<std::string> range_names;

  for (const auto& [name, info] : j.items()) {
    if (name == "__metadata__") continue;
    const std::string where = absl::StrCat("tensor '", name, "': ");
    if (!info.is_object()) return bad(where + "entry is not an object");
    auto dt = info.find("dtype");
    auto sh = info.find("shape");
    auto off = info.find("data_offsets");
    if (dt == info.end() || !dt->is_string()) return bad(where + "missing dtype");
    if (sh == info.end() || !sh->is_array()) return bad(where + "missing shape");
    if (off == info.end() || !off->is_array() || off->size() != 2) {
      return bad(where + "data_offsets must be [begin, end]");
    }
    SafetensorsTensor t;
    t.dtype = dt->get<std::string>();
    const int64_t elem = ElementSize(t.dtype);
    if (elem == 0) return bad(where + "unknown dtype " + t.dtype);
    // Multiply with an overflow guard: a hostile shape must not wrap around to a small size.
    int64_t count = 1;
    for (const auto& d : *sh) {
      if (!d.is_number_integer() || d.get<int64_t>() < 0)
        return bad(where + "shape has a bad dimension");
      const int64_t v = d.get<int64_t>();
      if (v != 0 && count > (int64_t{1} << 50) / v) return bad(where + "shape is absurdly large");
      count *= v;
      t.shape.push_back(v);
    }
    if (!(*off)[0].is_number_unsigned() || !(*off)[1].is_number_unsigned()) {
      return bad(where + "data_offsets must be non-negative integers");
    }
    const uint64_t begin = (*off)[0].get<uint64_t>(), end = (*off)[1].get<uint64_t>();
    if (begin > end) return bad(where + "data_offsets begin after they end");
    if (end > static_cast<uint64_t>(data_size)) {
      return bad(absl::StrCat(where, "data_offsets [", begin, ", ", end,
                              ") run past the data area (", data_size, " bytes): truncated?"));
    }
    t.n_bytes = count * elem;
    if (static_cast<uint64_t>(t.n_bytes) != end - begin) {
      return bad(absl::StrCat(where, "shape and dtype need ", t.n_bytes,
                              " bytes but data_offsets span ", end - begin));
    }
    t.data = data + begin;
    ranges.emplace_back(static_cast<int64_t>(begin), static_cast<int64_t>(end));
    range_names.push_back(name);
    tensors_.emplace(name, std::move(t));
  }

  // Sorted by start, each non-empty range must begin at or after the furthest end seen so far
  // (empty tensors own no bytes and may sit anywhere).
  std::vector<size_t> order;
  for (size_t i = 0; i < ranges.size(); ++i) {
    if (ranges[i].first != ranges[i].second) order.push_back(i);
  }
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return ranges[a] < ranges[b]; });
  size_t furthest = 0;
  for (size_t i = 1; i < order.size(); ++i) {
    if (ranges[order[i]].first < ranges[order[furthest]].second) {
      return bad(absl::StrCat("tensors '", range_names[order[furthest]], "' and '",
                              range_names[order[i]], "' overlap"));
    }
    if (ranges[order[i]].second > ranges[order[furthest]].second) furthest = i;
  }
  return absl::OkStatus();
}

}  // namespace moe
