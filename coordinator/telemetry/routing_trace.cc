#include "coordinator/telemetry/routing_trace.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace moe {
namespace {

constexpr char kMagic[8] = {'M', 'O', 'E', 'T', 'R', 'A', 'C', 'E'};
constexpr size_t kFixedHeader = 64;
constexpr size_t kRecordPrefix = 32;
constexpr uint8_t kPrefillFlag = 1;       // record flags, bit 0
constexpr uint8_t kMicroBatchFlag = 2;    // bit 1: the step's second micro-batch

size_t RoundUp(size_t n, size_t to) { return (n + to - 1) / to * to; }

double SteadySeconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

template <typename T>
void Put(char* dst, size_t offset, T value) {
  std::memcpy(dst + offset, &value, sizeof(T));  // the format is little-endian, like every host we build for
}

// JSON numbers: 17 significant digits give the double back exactly (a step's event time equals its
// records' time bit for bit); JSON has no NaN or infinity, so those become null.
std::string Number(double v) { return std::isfinite(v) ? absl::StrFormat("%.17g", v) : "null"; }

std::string Quoted(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(static_cast<char>(c));
    } else if (c < 0x20) {
      absl::StrAppendFormat(&out, "\\u%04x", c);
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  return out + "\"";
}

template <typename T>
std::string List(const std::vector<T>& values) {  // ranks 1..W of a [W + 1] vector
  std::string out = "[";
  for (size_t r = 1; r < values.size(); ++r) {
    if constexpr (std::is_floating_point_v<T>) {
      absl::StrAppend(&out, r > 1 ? "," : "", Number(values[r]));
    } else {
      absl::StrAppend(&out, r > 1 ? "," : "", values[r]);
    }
  }
  return out + "]";
}

}  // namespace

size_t RoutingTraceWriter::RecordBytes(int n_layers, int top_k) {
  const size_t choices = static_cast<size_t>(n_layers) * top_k;
  return RoundUp(kRecordPrefix + RoundUp(choices, 4) + 4 * choices + 4 * static_cast<size_t>(n_layers), 8);
}

size_t RoutingTraceWriter::HeaderBytes(int n_layers, int n_experts) {
  return kFixedHeader + RoundUp(2 * static_cast<size_t>(n_layers) * n_experts, 8);
}

std::string RoutingTraceWriter::EventsPath(const std::string& trace_path) {
  return trace_path + ".events.jsonl";
}

double RoutingTraceWriter::RouterEntropy(const float* logits, int n) {
  if (n < 1) return std::numeric_limits<double>::quiet_NaN();
  double m = -std::numeric_limits<double>::infinity();
  for (int e = 0; e < n; ++e) m = std::max(m, static_cast<double>(logits[e]));
  if (!std::isfinite(m)) return std::numeric_limits<double>::quiet_NaN();
  double sum = 0, weighted = 0;  // sum exp(x - m), sum exp(x - m) (x - m)
  for (int e = 0; e < n; ++e) {
    const double d = static_cast<double>(logits[e]) - m;
    const double w = std::exp(d);
    sum += w;
    if (w > 0) weighted += w * d;  // an expert at -inf adds nothing (0 * -inf would be NaN)
  }
  return std::log(sum) - weighted / sum;
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
  const std::string events_path = EventsPath(path);
  std::FILE* events = std::fopen(events_path.c_str(), "wb");
  if (events == nullptr) {
    const int error = errno;
    std::fclose(file);
    return absl::FailedPreconditionError(absl::StrCat("cannot create the routing trace's events file ",
                                                      events_path, ": ", std::strerror(error)));
  }
  const int W = placement != nullptr ? placement->n_workers() : 0;
  std::unique_ptr<RoutingTraceWriter> writer(new RoutingTraceWriter(file, events, path, c, W));
  const int L = c.num_hidden_layers, E = c.num_local_experts;
  std::vector<char> header(HeaderBytes(L, E), 0);
  std::memcpy(header.data(), kMagic, sizeof(kMagic));
  Put<uint32_t>(header.data(), 8, kVersion);
  Put<uint32_t>(header.data(), 12, static_cast<uint32_t>(header.size()));
  Put<uint32_t>(header.data(), 16, static_cast<uint32_t>(writer->record_bytes_));
  Put<uint32_t>(header.data(), 20, static_cast<uint32_t>(L));
  Put<uint32_t>(header.data(), 24, static_cast<uint32_t>(E));
  Put<uint32_t>(header.data(), 28, static_cast<uint32_t>(c.num_experts_per_tok));
  Put<uint32_t>(header.data(), 32, static_cast<uint32_t>(W));
  Put<double>(header.data(), 40,
              std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count());
  for (int l = 0; l < L; ++l) {
    for (int e = 0; e < E; ++e) {
      const int16_t owner = placement != nullptr ? static_cast<int16_t>(placement->owner(l, e)) : 0;
      Put<int16_t>(header.data(), kFixedHeader + 2 * (static_cast<size_t>(l) * E + e), owner);
    }
  }
  if (std::fwrite(header.data(), 1, header.size(), file) != header.size() || std::fflush(file) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot write the routing trace ", path, ": ", std::strerror(errno)));
  }
  return writer;
}

RoutingTraceWriter::RoutingTraceWriter(std::FILE* file, std::FILE* events, std::string path,
                                       const MixtralConfig& c, int n_workers)
    : file_(file),
      events_(events),
      path_(std::move(path)),
      n_layers_(c.num_hidden_layers),
      n_experts_(c.num_local_experts),
      top_k_(c.num_experts_per_tok),
      n_workers_(n_workers),
      record_bytes_(RecordBytes(c.num_hidden_layers, c.num_experts_per_tok)),
      start_(SteadySeconds()),
      step_worker_seconds_(static_cast<size_t>(n_workers) + 1, 0.0),
      step_worker_rows_(static_cast<size_t>(n_workers) + 1, 0) {
  std::setvbuf(file_, nullptr, _IOFBF, 1 << 20);  // a prefill step's records leave in one write
}

RoutingTraceWriter::~RoutingTraceWriter() { Close().IgnoreError(); }

double RoutingTraceWriter::Elapsed() const { return SteadySeconds() - start_; }

void RoutingTraceWriter::Fail(const char* what) {
  if (status_.ok()) {
    status_ = absl::DataLossError(absl::StrCat("routing trace ", path_, ": ", what, ": ",
                                               std::strerror(errno), "; later steps are not recorded"));
    std::fprintf(stderr, "moe: %s\n", std::string(status_.message()).c_str());
  }
}

void RoutingTraceWriter::WriteEvent(const std::string& line) {
  if (events_ == nullptr || !status_.ok()) return;
  // Flushed line by line, like the records step by step: a live events file is complete up to its
  // last line, and a crash can only cut that line (the loader drops it).
  if (std::fputs(line.c_str(), events_) == EOF || std::fputc('\n', events_) == EOF ||
      std::fflush(events_) != 0) {
    Fail("events write failed");
  }
}

void RoutingTraceWriter::OnStepBegin() {
  step_exchange_seconds_ = step_straggler_seconds_ = 0;
  std::fill(step_worker_seconds_.begin(), step_worker_seconds_.end(), 0.0);
  std::fill(step_worker_rows_.begin(), step_worker_rows_.end(), 0);
}

void RoutingTraceWriter::OnExchange(const ExchangeRecord& record) {
  step_exchange_seconds_ += record.wall_seconds;
  if (n_workers_ == 0) return;
  double slowest = 0, sum = 0;
  for (int r = 1; r <= n_workers_; ++r) {
    const double seconds =
        r < static_cast<int>(record.worker_compute_seconds.size()) ? record.worker_compute_seconds[r] : 0;
    const int64_t rows = r < static_cast<int>(record.worker_rows.size()) ? record.worker_rows[r] : 0;
    step_worker_seconds_[r] += seconds;
    step_worker_rows_[r] += rows;
    slowest = std::max(slowest, seconds);
    sum += seconds;
  }
  // As LoadAggregator counts it: how long the average worker waited for the slowest.
  step_straggler_seconds_ += slowest - sum / n_workers_;
}

void RoutingTraceWriter::OnForward(absl::Span<const RoutedToken> tokens,
                                   absl::Span<const Routing> routing) {
  ++step_;
  if (file_ == nullptr || !status_.ok()) return;
  const double time = Elapsed();
  const size_t choices = static_cast<size_t>(n_layers_) * top_k_;
  const size_t weights_at = kRecordPrefix + RoundUp(choices, 4);
  const size_t entropy_at = weights_at + 4 * choices;
  const size_t E = static_cast<size_t>(n_experts_);
  int64_t prefill_rows = 0;
  buffer_.assign(tokens.size() * record_bytes_, 0);
  for (size_t row = 0; row < tokens.size(); ++row) {
    char* rec = buffer_.data() + row * record_bytes_;
    Put<uint64_t>(rec, 0, tokens[row].sequence_id);
    Put<double>(rec, 8, time);
    Put<uint32_t>(rec, 16, step_);
    Put<int32_t>(rec, 20, tokens[row].position);
    Put<int32_t>(rec, 24, tokens[row].token);
    Put<uint8_t>(rec, 28, static_cast<uint8_t>((tokens[row].prefill ? kPrefillFlag : 0) |
                                               (tokens[row].second_micro_batch ? kMicroBatchFlag : 0)));
    prefill_rows += tokens[row].prefill;
    for (int l = 0; l < n_layers_; ++l) {
      for (int j = 0; j < top_k_; ++j) {
        const size_t src = row * top_k_ + j, dst = static_cast<size_t>(l) * top_k_ + j;
        rec[kRecordPrefix + dst] = static_cast<char>(static_cast<uint8_t>(routing[l].expert[src]));
        Put<float>(rec, weights_at + 4 * dst, routing[l].weight[src]);
      }
      // NaN when the runner left no logits (a Routing made by hand).
      const std::vector<float>& logits = routing[l].logits;
      const double entropy = logits.size() >= (row + 1) * E
                                 ? RouterEntropy(logits.data() + row * E, n_experts_)
                                 : std::numeric_limits<double>::quiet_NaN();
      Put<float>(rec, entropy_at + 4 * static_cast<size_t>(l), static_cast<float>(entropy));
    }
  }
  if (std::fwrite(buffer_.data(), 1, buffer_.size(), file_) != buffer_.size()) {
    Fail("write failed");
    return;
  }
  records_ += static_cast<int64_t>(tokens.size());
  // Every step reaches the file at once, so a live trace is complete up to the last step (one
  // write call per step; the serving overhead is measured in the README).
  if (std::fflush(file_) != 0) {
    Fail("write failed");
    return;
  }
  WriteEvent(absl::StrCat(
      "{\"event\":\"step\",\"step\":", step_, ",\"time\":", Number(time), ",\"rows\":", tokens.size(),
      ",\"prefill_rows\":", prefill_rows, ",\"exchange_seconds\":", Number(step_exchange_seconds_),
      ",\"worker_compute_seconds\":", List(step_worker_seconds_), ",\"worker_rows\":",
      List(step_worker_rows_), ",\"straggler_seconds\":", Number(step_straggler_seconds_), "}"));
}

void RoutingTraceWriter::OnSequenceStart(uint64_t sequence_id, const SequenceInfo& info) {
  // The request's arrival on the records' clock (its admission shows as its first record).
  const double time = info.arrival_seconds > 0 ? info.arrival_seconds - start_ : Elapsed();
  WriteEvent(absl::StrCat("{\"event\":\"sequence\",\"request_id\":", sequence_id,
                          ",\"label\":", Quoted(info.label), ",\"prompt_tokens\":", info.prompt_tokens,
                          ",\"max_tokens\":", info.max_tokens, ",\"time\":", Number(time), "}"));
}

void RoutingTraceWriter::OnSequenceEnd(uint64_t sequence_id) {
  WriteEvent(absl::StrCat("{\"event\":\"sequence_end\",\"request_id\":", sequence_id,
                          ",\"time\":", Number(Elapsed()), "}"));
}

absl::Status RoutingTraceWriter::Close() {
  if (file_ != nullptr) {
    if (std::fclose(file_) != 0) Fail("close failed");
    file_ = nullptr;
  }
  if (events_ != nullptr) {
    if (std::fclose(events_) != 0) Fail("events close failed");
    events_ = nullptr;
  }
  return status_;
}

}  // namespace moe
