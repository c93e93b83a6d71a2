#include "coordinator/telemetry/routing_trace.h"

#include <cerrno>
#include <chrono>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace moe {
namespace {

constexpr char kMagic[8] = {'M', 'O', 'E', 'T', 'R', 'A', 'C', 'E'};
constexpr size_t kFixedHeader = 64;
constexpr size_t kRecordPrefix = 32;

size_t RoundUp(size_t n, size_t to) { return (n + to - 1) / to * to; }

double SteadySeconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

template <typename T>
void Put(char* dst, size_t offset, T value) {
  std::memcpy(dst + offset, &value, sizeof(T));  // the format is little-endian, like every host we build for
}

}  // namespace

size_t RoutingTraceWriter::RecordBytes(int n_layers, int top_k) {
  const size_t choices = static_cast<size_t>(n_layers) * top_k;
  return RoundUp(kRecordPrefix + RoundUp(choices, 4) + 4 * choices, 8);
}

size_t RoutingTraceWriter::HeaderBytes(int n_layers, int n_experts) {
  return kFixedHeader + RoundUp(2 * static_cast<size_t>(n_layers) * n_experts, 8);
}

absl::StatusOr<std::unique_ptr<RoutingTraceWriter>> RoutingTraceWriter::Open(
    const std::string& path, const MixtralConfig& c, const ExpertPlacement* placement) {
  if (c.num_local_experts > 255) {
    return absl::InvalidArgumentError("the routing trace stores expert ids in one byte: at most 255 experts");
  }
  std::FILE* file = std::fopen(path.c_str(), "wb");
  if (file == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot create the routing trace ", path, ": ", std::strerror(errno)));
  }
  std::unique_ptr<RoutingTraceWriter> writer(
      new RoutingTraceWriter(file, path, c.num_hidden_layers, c.num_experts_per_tok));
  const int L = c.num_hidden_layers, E = c.num_local_experts;
  std::vector<char> header(HeaderBytes(L, E), 0);
  std::memcpy(header.data(), kMagic, sizeof(kMagic));
  Put<uint32_t>(header.data(), 8, kVersion);
  Put<uint32_t>(header.data(), 12, static_cast<uint32_t>(header.size()));
  Put<uint32_t>(header.data(), 16, static_cast<uint32_t>(writer->record_bytes_));
  Put<uint32_t>(header.data(), 20, static_cast<uint32_t>(L));
  Put<uint32_t>(header.data(), 24, static_cast<uint32_t>(E));
  Put<uint32_t>(header.data(), 28, static_cast<uint32_t>(c.num_experts_per_tok));
  Put<uint32_t>(header.data(), 32, placement != nullptr ? static_cast<uint32_t>(placement->n_workers()) : 0);
  Put<double>(header.data(), 40,
              std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count());
  for (int l = 0; l < L; ++l) {
    for (int e = 0; e < E; ++e) {
      const int16_t owner = placement != nullptr ? static_cast<int16_t>(placement->owner(l, e)) : 0;
      Put<int16_t>(header.data(), kFixedHeader + 2 * (static_cast<size_t>(l) * E + e), owner);
    }
  }
  if (std::fwrite(header.data(), 1, header.size(), file) != header.size()) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot write the routing trace ", path, ": ", std::strerror(errno)));
  }
  return writer;
}

RoutingTraceWriter::RoutingTraceWriter(std::FILE* file, std::string path, int n_layers, int top_k)
    : file_(file),
      path_(std::move(path)),
      n_layers_(n_layers),
      top_k_(top_k),
      record_bytes_(RecordBytes(n_layers, top_k)),
      start_(SteadySeconds()) {
  std::setvbuf(file_, nullptr, _IOFBF, 1 << 20);  // a prefill step's records leave in one write
}

RoutingTraceWriter::~RoutingTraceWriter() { Close().IgnoreError(); }

void RoutingTraceWriter::Fail(const char* what) {
  if (status_.ok()) {
    status_ = absl::DataLossError(absl::StrCat("routing trace ", path_, ": ", what, ": ",
                                               std::strerror(errno), "; later steps are not recorded"));
    std::fprintf(stderr, "moe: %s\n", std::string(status_.message()).c_str());
  }
}

void RoutingTraceWriter::OnForward(absl::Span<const RoutedToken> tokens,
                                   absl::Span<const Routing> routing) {
  ++step_;
  if (file_ == nullptr || !status_.ok()) return;
  const double time = SteadySeconds() - start_;
  const size_t choices = static_cast<size_t>(n_layers_) * top_k_;
  const size_t weights_at = kRecordPrefix + RoundUp(choices, 4);
  buffer_.assign(tokens.size() * record_bytes_, 0);
  for (size_t row = 0; row < tokens.size(); ++row) {
    char* rec = buffer_.data() + row * record_bytes_;
    Put<uint64_t>(rec, 0, tokens[row].sequence_id);
    Put<double>(rec, 8, time);
    Put<uint32_t>(rec, 16, step_);
    Put<int32_t>(rec, 20, tokens[row].position);
    Put<int32_t>(rec, 24, tokens[row].token);
    for (int l = 0; l < n_layers_; ++l) {
      for (int j = 0; j < top_k_; ++j) {
        const size_t src = row * top_k_ + j, dst = static_cast<size_t>(l) * top_k_ + j;
        rec[kRecordPrefix + dst] = static_cast<char>(static_cast<uint8_t>(routing[l].expert[src]));
        Put<float>(rec, weights_at + 4 * dst, routing[l].weight[src]);
      }
    }
  }
  if (std::fwrite(buffer_.data(), 1, buffer_.size(), file_) != buffer_.size()) {
    Fail("write failed");
    return;
  }
  records_ += static_cast<int64_t>(tokens.size());
  // Every step reaches the file at once, so a live trace is complete up to the last step (one
  // write call per step; the serving overhead is measured in the README).
  if (std::fflush(file_) != 0) Fail("write failed");
}

absl::Status RoutingTraceWriter::Close() {
  if (file_ != nullptr) {
    if (std::fclose(file_) != 0) Fail("close failed");
    file_ = nullptr;
  }
  return status_;
}

}  // namespace moe
