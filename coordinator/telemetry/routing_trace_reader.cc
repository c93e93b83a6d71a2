#include "coordinator/telemetry/routing_trace_reader.h"

#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace moe {
namespace {

constexpr char kMagic[8] = {'M', 'O', 'E', 'T', 'R', 'A', 'C', 'E'};
constexpr uint32_t kOldestVersion = 1, kNewestVersion = 2;
constexpr size_t kFixedHeader = 64;
constexpr size_t kRecordPrefix = 32;
constexpr uint32_t kMaxExperts = 255;    // expert ids are one byte
constexpr uint32_t kMaxWorkers = 32767;  // placement ranks are int16

uint64_t RoundUp(uint64_t n, uint64_t to) { return (n + to - 1) / to * to; }

template <typename T>
T Get(const char* p, size_t offset) {
  T v;
  std::memcpy(&v, p + offset, sizeof(T));  // little-endian, like every host we build for
  return v;
}

}  // namespace

absl::StatusOr<RoutingTrace> RoutingTrace::Open(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read the routing trace ", path));
  std::ostringstream bytes;
  bytes << in.rdbuf();
  return Parse(bytes.str(), path);
}

absl::StatusOr<RoutingTrace> RoutingTrace::Parse(std::string bytes, const std::string& name) {
  auto bad = [&name](auto&&... what) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": ", what...));
  };
  if (bytes.size() < kFixedHeader) {
    return bad("not a routing trace: ", bytes.size(), " bytes, shorter than the ", kFixedHeader,
               "-byte header");
  }
  const char* p = bytes.data();
  if (std::memcmp(p, kMagic, sizeof(kMagic)) != 0)
    return bad("not a routing trace (no MOETRACE magic)");
  const uint32_t version = Get<uint32_t>(p, 8), header_bytes = Get<uint32_t>(p, 12),
                 record_bytes = Get<uint32_t>(p, 16), n_layers = Get<uint32_t>(p, 20),
                 n_experts = Get<uint32_t>(p, 24), top_k = Get<uint32_t>(p, 28),
                 n_workers = Get<uint32_t>(p, 32);
  const double start_time = Get<double>(p, 40);
  if (version < kOldestVersion || version > kNewestVersion) {
    return bad("routing trace version ", version, " is not supported (this reader reads versions ",
               kOldestVersion, " to ", kNewestVersion, ")");
  }
  if (n_layers < 1) return bad("bad header: n_layers is 0");
  if (n_experts < 1 || n_experts > kMaxExperts) {
    return bad("bad header: n_experts ", n_experts, " is not in 1..", kMaxExperts);
  }
  if (top_k < 1 || top_k > n_experts)
    return bad("bad header: top_k ", top_k, " is not in 1..n_experts (", n_experts, ")");
  if (n_workers > kMaxWorkers)
    return bad("bad header: n_workers ", n_workers, " is above ", kMaxWorkers);
  // The version fixes both sizes (64-bit arithmetic: the header's u32 fields cannot overflow it);
  // version 2 adds f32[L] of router entropy after the weights.
  const uint64_t cells = uint64_t{n_layers} * n_experts;
  const uint64_t want_header = RoundUp(kFixedHeader + 2 * cells, 8);
  if (header_bytes != want_header) {
    return bad("bad header: header_bytes is ", header_bytes, ", expected ", want_header, " for ",
               n_layers, " layers x ", n_experts, " experts");
  }
  const uint64_t choices = uint64_t{n_layers} * top_k;
  const uint64_t weights_offset = kRecordPrefix + RoundUp(choices, 4);
  const uint64_t entropy_offset = weights_offset + 4 * choices;
  const uint64_t want_record = RoundUp(entropy_offset + (version >= 2 ? 4 * uint64_t{n_layers} : 0), 8);
  if (record_bytes != want_record) {
    return bad("bad header: record_bytes is ", record_bytes, ", expected ", want_record, " for ",
               n_layers, " layers x top-", top_k);
  }
  if (!std::isfinite(start_time)) return bad("bad header: start time is ", start_time);
  if (bytes.size() < header_bytes) {
    return bad("truncated header: ", bytes.size(),
               " bytes, the header with its placement table needs ", header_bytes);
  }

  RoutingTrace t;
  t.version_ = static_cast<int>(version);
  t.n_layers_ = static_cast<int>(n_layers);
  t.n_experts_ = static_cast<int>(n_experts);
  t.top_k_ = static_cast<int>(top_k);
  t.n_workers_ = static_cast<int>(n_workers);
  t.start_time_ = start_time;
  t.header_bytes_ = header_bytes;
  t.record_bytes_ = record_bytes;
  t.weights_offset_ = weights_offset;
  t.entropy_offset_ = entropy_offset;
  const uint64_t body = bytes.size() - header_bytes;
  t.n_records_ = static_cast<int64_t>(body / record_bytes);
  t.dropped_bytes_ = static_cast<int64_t>(body % record_bytes);
  t.bytes_ = std::move(bytes);

  for (int l = 0; l < t.n_layers_; ++l) {
    for (int e = 0; e < t.n_experts_; ++e) {
      const int rank = t.placement(l, e);
      if (t.n_workers_ == 0 ? rank != 0 : (rank < 1 || rank > t.n_workers_)) {
        return bad("bad placement: layer ", l, " expert ", e, " is on rank ", rank,
                   t.n_workers_ == 0 ? " but n_workers is 0"
                                     : absl::StrCat(", outside 1..", t.n_workers_));
      }
    }
  }
  for (int64_t i = 0; i < t.n_records_; ++i) {
    if (!std::isfinite(t.time(i))) return bad("record ", i, ": time is not a finite number");
    for (int l = 0; l < t.n_layers_; ++l) {
      for (int k = 0; k < t.top_k_; ++k) {
        if (t.expert(i, l, k) >= t.n_experts_) {
          return bad("record ", i, ": expert id ", t.expert(i, l, k), " out of range for ",
                     t.n_experts_, " experts");
        }
      }
    }
  }
  return t;
}

int RoutingTrace::placement(int layer, int expert) const {
  return Get<int16_t>(bytes_.data(),
                      kFixedHeader + 2 * (static_cast<size_t>(layer) * n_experts_ + expert));
}

const char* RoutingTrace::record(int64_t i) const {
  return bytes_.data() + header_bytes_ + static_cast<size_t>(i) * record_bytes_;
}

uint64_t RoutingTrace::request_id(int64_t i) const { return Get<uint64_t>(record(i), 0); }
double RoutingTrace::time(int64_t i) const { return Get<double>(record(i), 8); }
uint32_t RoutingTrace::step(int64_t i) const { return Get<uint32_t>(record(i), 16); }
int32_t RoutingTrace::position(int64_t i) const { return Get<int32_t>(record(i), 20); }
int32_t RoutingTrace::token_id(int64_t i) const { return Get<int32_t>(record(i), 24); }

int RoutingTrace::expert(int64_t i, int layer, int choice) const {
  return static_cast<unsigned char>(
      record(i)[kRecordPrefix + static_cast<size_t>(layer) * top_k_ + choice]);
}

float RoutingTrace::weight(int64_t i, int layer, int choice) const {
  return Get<float>(record(i),
                    weights_offset_ + 4 * (static_cast<size_t>(layer) * top_k_ + choice));
}

uint8_t RoutingTrace::flags(int64_t i) const {
  return version_ >= 2 ? Get<uint8_t>(record(i), 28) : 0;  // version 1: a reserved u32, always 0
}

float RoutingTrace::entropy(int64_t i, int layer) const {
  if (version_ < 2) return std::nanf("");
  return Get<float>(record(i), entropy_offset_ + 4 * static_cast<size_t>(layer));
}

std::vector<std::vector<int64_t>> RoutingTrace::ExpertCounts() const {
  std::vector<std::vector<int64_t>> counts(
      static_cast<size_t>(n_layers_), std::vector<int64_t>(static_cast<size_t>(n_experts_), 0));
  for (int64_t i = 0; i < n_records_; ++i) {
    for (int l = 0; l < n_layers_; ++l) {
      for (int k = 0; k < top_k_; ++k) ++counts[l][expert(i, l, k)];
    }
  }
  return counts;
}

}  // namespace moe
