// Benchmark mode: prefill and decode speed for batches of sequences, with a per-op breakdown,
// peak memory, and each figure next to this machine's measured limits (memory bandwidth, peak
// arithmetic rate). Prints figures and judges nothing.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "coordinator/tools/modes.h"
#include "core/base/status_macros.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/packed_matmul.h"
#include "kernels/cpu/probes.h"
#include "kernels/cpu/quant_matmul.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/quant.h"

ABSL_FLAG(int, bench_prompt_tokens, 512, "benchmark: prompt length of each sequence");
ABSL_FLAG(int, bench_decode_tokens, 32, "benchmark: decode steps after the prefill");
ABSL_FLAG(std::string, batch, "1",
          "benchmark: sequences decoded together, one run per entry of a comma-separated list "
          "(as llama-batched-bench -npl): e.g. 1,16,64");
ABSL_FLAG(int, bandwidth_mib, 2048, "buffer size for the memory bandwidth measurement");

namespace moe::cli {
namespace {

using Clock = std::chrono::steady_clock;
double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

std::string CpuModel() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  }
  return "unknown CPU";
}

// A device's memory bandwidth: a device-to-device copy of `bytes`, counting bytes read and
// written; best of several passes. 0 when the memory cannot be had.
double MeasureDeviceBandwidth(kernels::Backend* backend, int64_t bytes) {
  kernels::BackendArray<char> a(backend), b(backend);
  if (!a.Reserve(bytes) || !b.Reserve(bytes)) return 0;
  backend->Copy(b.data(), a.data(), static_cast<size_t>(bytes));  // warm-up
  double best = 0;
  for (int pass = 0; pass < 5; ++pass) {
    if (!backend->Sync().ok()) return 0;
    const auto start = Clock::now();
    backend->Copy(b.data(), a.data(), static_cast<size_t>(bytes));
    if (!backend->Sync().ok()) return 0;
    best = std::max(best, 2.0 * static_cast<double>(bytes) / Seconds(start, Clock::now()));
  }
  return best;
}

// VmHWM: the most this process has held resident so far.
int64_t PeakResidentBytes() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::atoll(line.c_str() + 6) * 1024;
  }
  return 0;
}

// The model's weights by role, from the config (so that it holds on a coordinator that maps no
// expert): parameters, and bytes as held (quantized where --quantize or the checkpoint says).
struct WeightCosts {
  double dense_params = 0;   // attention projections and router, all layers
  double lm_head_params = 0;
  double expert_params = 0;  // one expert of one layer
  double dense_bytes = 0;    // the attention projections as held, the router in float32
  double lm_head_bytes = 0;
  double expert_bytes = 0;  // one expert of one layer, as held
  int layers = 0, top_k = 0, n_experts = 0;
  double attention_width = 0;  // heads * head_dim: attention scores cost 4 * width FLOP per key

  explicit WeightCosts(const ModelWeights& w) {
    auto params = [](const WeightMatrix& m) { return static_cast<double>(m.rows * m.cols); };
    auto bytes = [&](const WeightMatrix& m, kernels::WeightFormat f) {
      return params(m) * kernels::BitsPerWeight(kernels::HeldDType(m.dtype, f), m.cols) / 8;
    };
    const MixtralConfig& c = w.config;
    for (const LayerWeights& l : w.layers) {
      const AttentionLayerWeights& a = l.attention;
      dense_params += params(a.q_proj) + params(a.k_proj) + params(a.v_proj) + params(a.o_proj) +
                      params(a.router);
      for (const WeightMatrix* m : {&a.q_proj, &a.k_proj, &a.v_proj, &a.o_proj}) {
        dense_bytes += bytes(*m, w.formats.attention);
      }
      dense_bytes += 4 * params(a.router);
    }
    lm_head_params = params(w.lm_head);
    lm_head_bytes = bytes(w.lm_head, w.formats.lm_head);
    expert_params = 3.0 * c.intermediate_size * c.hidden_size;
    const int64_t expert_cols = c.hidden_size;  // w1, w3; w2's width differs, its scales hardly
    expert_bytes = expert_params * kernels::BitsPerWeight(w.expert_dtype, expert_cols) / 8;
    layers = c.num_hidden_layers;
    top_k = c.num_experts_per_tok;
    n_experts = c.num_local_experts;
    attention_width = static_cast<double>(c.num_attention_heads) * c.head_dim;
  }
  // Weight bytes one decode step of batch 1 reads: the dense weights, top_k experts per layer,
  // the lm_head.
  double ActiveBytesPerToken() const {
    return dense_bytes + lm_head_bytes + layers * top_k * expert_bytes;
  }
  // FLOP of `tokens` tokens through the layers (2 per weight and token, plus attention scores
  // and weighted values over `keys_per_token` keys on average), and lm_head for `logit_rows`.
  double Flops(double tokens, double keys_per_token, double logit_rows) const {
    return 2 * tokens * (dense_params + layers * top_k * expert_params) +
           4 * tokens * keys_per_token * attention_width * layers + 2 * logit_rows * lm_head_params;
  }
};

// What this machine offers, measured once per run.
struct MachineLimits {
  double bandwidth = 0;  // bytes/s
  double peak = 0;       // FLOP/s of the products the weights' dtype runs, 0 if unknown
  const char* peak_name = "";
};

// dtype: the experts', whose products are most of the work.
MachineLimits MeasureLimits(kernels::Backend* backend, DType dtype) {
  MachineLimits m;
  const int64_t probe_bytes = int64_t{absl::GetFlag(FLAGS_bandwidth_mib)} << 20;
  if (!backend->host_memory()) {
    m.bandwidth = MeasureDeviceBandwidth(backend, probe_bytes);
    std::printf("device memory bandwidth (measured, device-to-device copy, read + write): %.1f GB/s\n",
                m.bandwidth / 1e9);
    return m;
  }
  m.bandwidth = kernels::MeasureReadBandwidth(probe_bytes);
  const double bf16 = kernels::MeasureBf16DotPeak(), fma = kernels::MeasureF32FmaPeak();
  const double amx = kernels::MeasureAmxBf16Peak();
  const double int8 = kernels::IsQuantized(dtype) ? kernels::MeasureInt8DotPeak() : 0;
  std::printf(
      "measured with %d threads: memory read bandwidth %.1f GB/s; peak BF16 dot products "
      "%.0f GFLOP/s (vdpbf16ps)%s, float32 FMA %.0f GFLOP/s%s (register-only loops)\n",
      kernels::CpuThreads(), m.bandwidth / 1e9, bf16 / 1e9,
      amx > 0 ? absl::StrFormat(", AMX tiles %.0f GFLOP/s", amx / 1e9).c_str() : "", fma / 1e9,
      int8 > 0 ? absl::StrFormat(", int8 products %.0f GOP/s (vpmaddubsw)", int8 / 1e9).c_str()
               : "");
  if (dtype == DType::kQ4) {
    m.peak = int8;
    m.peak_name = "int8 product peak";
  } else if (dtype == DType::kI8) {
    // Two vpmaddubsw per 32 multiply-adds (probes.h): INT8 weights reach half the instruction's
    // rate.
    m.peak = int8 / 2;
    m.peak_name = "INT8 weights' product peak (half the vpmaddubsw rate)";
  } else if (backend->RoundsActivations(dtype) &&
             kernels::packed::Bf16Products() == kernels::packed::Products::kBf16Amx) {
    m.peak = amx;
    m.peak_name = "AMX BF16 peak";
  } else if (backend->RoundsActivations(dtype)) {
    m.peak = bf16;
    m.peak_name = "BF16 dot-product peak";
  } else {
    m.peak = fma;
    m.peak_name = "float32 FMA peak";
  }
  return m;
}

// Which kernels the CPU's products run, and how they multiply.
std::string DescribeCpuProducts(const kernels::Backend& backend, const ModelWeights& weights) {
  const WeightFormats& f = weights.formats;
  if (kernels::IsQuantized(weights.expert_dtype) || f.any_quantized()) {
    return absl::StrCat(
        kernels::quant::Describe(), " for the quantized classes (", DescribeHeldWeights(weights),
        "); ", kernels::packed::Available() ? "packed AVX-512 kernels" : "fallback kernels",
        " for the rest");
  }
  if (!kernels::packed::Available()) {
    return "fallback kernels (no AVX-512): float32 products, OpenBLAS above 4 rows";
  }
  return std::string("packed AVX-512 kernels; ") +
         kernels::packed::Describe(backend.RoundsActivations(DType::kBF16)
                                       ? kernels::packed::Bf16Products()
                                       : kernels::packed::Products::kFloat32);
}

std::string OfPeak(double flops_per_s, const MachineLimits& m) {
  if (m.peak <= 0) return "";
  char buf[96];
  std::snprintf(buf, sizeof(buf), ", %.0f%% of the %s", 100.0 * flops_per_s / m.peak, m.peak_name);
  return buf;
}

// split_steps of steps ran as two micro-batches (--overlap); batch: sequences per step (one
// cannot be split).
void PrintBreakdown(const char* phase, const OpTimes& times, double total, int layers, int steps,
                    int split_steps, int batch) {
  std::printf("  %s time by op:", phase);
  for (int i = 0; i < static_cast<int>(Op::kCount); ++i) {
    const double s = times.seconds[i];
    if (s <= 0) continue;
    std::printf(" %s %.1f%%", OpName(static_cast<Op>(i)), 100.0 * s / total);
  }
  std::printf("  (exchange includes experts)\n");
  auto per_layer_ms = [&](std::initializer_list<Op> ops) {
    double s = 0;
    for (Op op : ops) s += times.seconds[static_cast<int>(op)];
    return 1e3 * s / (static_cast<double>(layers) * steps);
  };
  std::printf("  %s per layer and step: attention %.3f ms (norm, qkv, rope, attention, o_proj), "
              "router %.3f ms, exchange %.3f ms of which experts %.3f ms, combine %.3f ms\n",
              phase, per_layer_ms({Op::kQkv, Op::kRope, Op::kAttention, Op::kOutProj, Op::kNorm}),
              per_layer_ms({Op::kRouter}), per_layer_ms({Op::kExchange}),
              per_layer_ms({Op::kExperts}), per_layer_ms({Op::kCombine}));
  // What ping-pong can gain at most: hiding the shorter of the coordinator's own work and its
  // wait on the exchange (which holds the workers' experts), with nothing added for the second
  // exchange or the experts' weights read twice.
  const double waited = times.seconds[static_cast<int>(Op::kExchange)];
  if (waited <= 0 || steps <= 0 || batch < 2) return;
  const double busy = std::max(0.0, total - waited);
  std::printf("  %s overlap: %d of %d steps in two micro-batches; per step the coordinator computed %.3f ms "
              "and waited %.3f ms on the exchange",
              phase, split_steps, steps, 1e3 * busy / steps, 1e3 * waited / steps);
  if (split_steps == 0) {
    std::printf(" -> overlapping them could make this at most %.2fx as fast", total / std::max(busy, waited));
  }
  std::printf("\n");
}

absl::StatusOr<std::vector<int>> BatchSizes() {
  std::vector<int> sizes;
  for (absl::string_view part : absl::StrSplit(absl::GetFlag(FLAGS_batch), ',')) {
    int b = 0;
    if (!absl::SimpleAtoi(part, &b) || b < 1 || b > 4096) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--batch must be a comma-separated list of sequence counts in [1, 4096], got '",
          absl::GetFlag(FLAGS_batch), "'"));
    }
    sizes.push_back(b);
  }
  return sizes;
}

// One benchmark run: `batch` sequences of `n_prompt` random tokens prefilled in steps of at most
// max(n_prompt, 512) tokens (whole prompts), then `n_decode` greedy steps decoding all of them.
class BatchRun {
 public:
  BatchRun(ModelRunner* runner, int batch, int n_prompt) : runner_(runner), batch_(batch) {
    std::mt19937 rng(1234);
    const MixtralConfig& c = runner->config();
    prompts_.assign(static_cast<size_t>(batch), std::vector<int32_t>(static_cast<size_t>(n_prompt)));
    for (auto& p : prompts_) {
      for (auto& t : p) t = static_cast<int32_t>(rng() % static_cast<uint32_t>(c.vocab_size));
      p[0] = c.bos_token_id;
    }
    for (int b = 0; b < batch; ++b) caches_.push_back(runner->NewCache());
    const int budget = std::max(n_prompt, 512);
    per_step_ = std::max(1, budget / n_prompt);
    // Sequences 1..batch, for the observers (a routing trace); each run starts them anew.
    SequenceInfo info;
    info.prompt_tokens = n_prompt;
    info.max_tokens = absl::GetFlag(FLAGS_bench_decode_tokens);
    info.arrival_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
    for (int b = 0; b < batch; ++b) runner_->BeginSequence(static_cast<uint64_t>(b + 1), info);
  }
  ~BatchRun() {
    for (int b = 0; b < batch_; ++b) runner_->EndSequence(static_cast<uint64_t>(b + 1));
  }
  BatchRun(const BatchRun&) = delete;
  BatchRun& operator=(const BatchRun&) = delete;

  // Prefills sequences [0, n) (all by default); leaves next_[b] for each.
  absl::Status Prefill(int n = -1) {
    if (n < 0) n = batch_;
    next_.assign(static_cast<size_t>(batch_), 0);
    std::vector<float> logits;
    const int64_t vocab = runner_->config().vocab_size;
    for (int first = 0; first < n; first += per_step_) {
      std::vector<SequenceChunk> chunks;
      for (int b = first; b < std::min(n, first + per_step_); ++b) {
        chunks.push_back(SequenceChunk{&caches_[b], prompts_[b], false, static_cast<uint64_t>(b + 1),
                                       /*prefill=*/true});
      }
      MOE_RETURN_IF_ERROR(runner_->Forward(chunks, &logits));
      Count();
      for (size_t i = 0; i < chunks.size(); ++i) {
        const float* row = logits.data() + i * vocab;
        next_[first + i] = static_cast<int32_t>(std::max_element(row, row + vocab) - row);
      }
    }
    return absl::OkStatus();
  }

  // One greedy step of sequences [0, n), picked where the logits are, as the server does (on a
  // GPU only the winners' ids come back). Counts the distinct experts each layer touched.
  absl::Status DecodeStep(int n = -1) {
    if (n < 0) n = batch_;
    std::vector<SequenceChunk> chunks;
    for (int b = 0; b < n; ++b) {
      chunks.push_back(SequenceChunk{&caches_[b], absl::Span<const int32_t>(&next_[b], 1), false,
                                     static_cast<uint64_t>(b + 1)});
    }
    MOE_RETURN_IF_ERROR(runner_->Forward(chunks, /*logits=*/nullptr));
    Count();
    for (const Routing& r : runner_->last_routing()) {
      touched_experts_ += static_cast<double>(std::set<int32_t>(r.expert.begin(), r.expert.end()).size());
    }
    std::vector<Sampler> greedy(static_cast<size_t>(n), Sampler(SamplingParams{}));
    std::vector<Sampler*> samplers;
    for (Sampler& s : greedy) samplers.push_back(&s);
    std::vector<int32_t> sampled;
    MOE_RETURN_IF_ERROR(runner_->SampleNext(samplers, &sampled));
    std::copy(sampled.begin(), sampled.end(), next_.begin());
    return absl::OkStatus();
  }

  double touched_experts() const { return touched_experts_; }  // summed over steps and layers
  int steps() const { return steps_; }
  int split_steps() const { return split_steps_; }  // run as two micro-batches
  void ResetCounts() { touched_experts_ = 0, steps_ = 0, split_steps_ = 0; }
  int64_t kv_bytes() const {
    int64_t bytes = 0;
    for (const KvCache& c : caches_) bytes += c.bytes();
    return bytes;
  }

 private:
  ModelRunner* runner_;
  int batch_;
  int per_step_ = 1;
  std::vector<std::vector<int32_t>> prompts_;
  std::vector<KvCache> caches_;
  std::vector<int32_t> next_;
  double touched_experts_ = 0;
  int steps_ = 0, split_steps_ = 0;

  void Count() {
    ++steps_;
    split_steps_ += runner_->last_micro_batches() == 2;
  }
};

// The cluster's exchange figures for one phase: the wall time per layer split into the slowest
// worker's experts and the rest, the bytes moved, and each worker's rows and expert time.
void PrintExchange(const char* phase, const ExchangeStats& s) {
  if (s.exchanges == 0) return;
  const double per = 1e3 / static_cast<double>(s.exchanges);
  std::printf("  %s exchange per layer: %.3f ms wall = %.3f ms slowest worker's experts + %.3f ms "
              "transfer, packing and waiting; %.2f MB sent, %.2f MB received\n",
              phase, s.wall_seconds * per, s.slowest_compute_seconds * per,
              (s.wall_seconds - s.slowest_compute_seconds) * per, s.bytes_sent / 1e6 / s.exchanges,
              s.bytes_received / 1e6 / s.exchanges);
  std::string line = absl::StrCat("  ", phase, " per worker (rows, expert ms per layer):");
  for (size_t r = 1; r < s.worker_rows.size(); ++r) {
    absl::StrAppendFormat(&line, " [%d] %d, %.3f", r, s.worker_rows[r], s.worker_compute_seconds[r] * per);
  }
  std::printf("%s\n", line.c_str());
}

absl::Status RunBatch(ModelRunner* runner, const WeightCosts& cost, const MachineLimits& limits,
                      int batch, OpTimes* times, ExchangeStats* exchange) {
  const MixtralConfig& c = runner->config();
  const int n_prompt = absl::GetFlag(FLAGS_bench_prompt_tokens);
  const int n_decode = absl::GetFlag(FLAGS_bench_decode_tokens);
  // Warm-up, untimed: faults every page in, sizes every scratch buffer for the largest prefill
  // step and for decoding the whole batch.
  {
    BatchRun warm(runner, batch, n_prompt);
    MOE_RETURN_IF_ERROR(warm.Prefill());
    for (int i = 0; i < std::min(n_decode, 2); ++i) MOE_RETURN_IF_ERROR(warm.DecodeStep());
  }
  BatchRun run(runner, batch, n_prompt);
  const std::string label = batch == 1 ? "batch 1" : absl::StrCat("batch ", batch);

  if (times != nullptr) times->Reset();
  if (exchange != nullptr) exchange->Reset();
  auto start = Clock::now();
  MOE_RETURN_IF_ERROR(run.Prefill());
  const double prefill_s = Seconds(start, Clock::now());
  const double prompt_tokens = static_cast<double>(batch) * n_prompt;
  const double prefill_flops = cost.Flops(prompt_tokens, (n_prompt + 1) / 2.0, batch);
  std::printf("%s prefill: %d x %d tokens in %.3f s = %.1f tokens/s; %.0f GFLOP/s%s\n",
              label.c_str(), batch, n_prompt, prefill_s, prompt_tokens / prefill_s,
              prefill_flops / prefill_s / 1e9, OfPeak(prefill_flops / prefill_s, limits).c_str());
  if (times != nullptr) {
    PrintBreakdown("prefill", *times, prefill_s, c.num_hidden_layers, run.steps(), run.split_steps(), batch);
  }
  if (exchange != nullptr) PrintExchange("prefill", *exchange);

  if (times != nullptr) times->Reset();
  if (exchange != nullptr) exchange->Reset();
  run.ResetCounts();
  start = Clock::now();
  for (int i = 0; i < n_decode; ++i) MOE_RETURN_IF_ERROR(run.DecodeStep());
  const double decode_s = Seconds(start, Clock::now());
  // Per step: the dense weights and lm_head once, each touched expert once.
  const double steps = std::max(1, n_decode);
  const double step_bytes =
      cost.dense_bytes + cost.lm_head_bytes + run.touched_experts() / steps * cost.expert_bytes;
  const double step_flops = cost.Flops(batch, n_prompt + n_decode / 2.0, batch);
  const double memory_s = step_bytes / limits.bandwidth;
  const double compute_s = limits.peak > 0 ? step_flops / limits.peak : 0;
  const double bound_s = std::max(memory_s, compute_s);
  const double step_s = decode_s / steps;
  const double tps = batch * n_decode / decode_s;
  std::printf("%s decode: %d steps in %.3f s = %.2f tokens/s (%.1f ms per step: %.2f GB of weights "
              "touched, %.1f GFLOP)\n",
              label.c_str(), n_decode, decode_s, tps, 1e3 * step_s, step_bytes / 1e9, step_flops / 1e9);
  std::printf("  limits per step: memory %.1f ms (%.1f GB/s measured)%s -> at most %.1f tokens/s; "
              "this run %.0f%% of that, %.0f%% of the bandwidth%s\n",
              1e3 * memory_s, limits.bandwidth / 1e9,
              compute_s > 0 ? absl::StrFormat(", compute %.1f ms (%s)", 1e3 * compute_s, limits.peak_name).c_str() : "",
              batch / bound_s, 100.0 * bound_s / step_s, 100.0 * memory_s / step_s,
              OfPeak(step_flops / step_s, limits).c_str());
  std::printf("  over the run: %.1f generated tokens/s (prefill and decode)\n",
              batch * n_decode / (prefill_s + decode_s));
  if (times != nullptr) {
    PrintBreakdown("decode", *times, decode_s, c.num_hidden_layers, n_decode, run.split_steps(), batch);
  }
  if (exchange != nullptr) PrintExchange("decode", *exchange);
  std::printf("  KV cache of the run: %.1f MB\n", run.kv_bytes() / 1e6);
  if (const std::string learned = runner->overlap().Describe(); !learned.empty()) {
    std::printf("  --overlap auto, timed so far (median time per token of each way, steps timed):\n");
    for (absl::string_view line : absl::StrSplit(learned, '\n', absl::SkipEmpty())) {
      std::printf("    %.*s\n", static_cast<int>(line.size()), line.data());
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status RunBenchMode(ModelRunner* runner, const ModelWeights& weights, OpTimes* times,
                          ExchangeStats* exchange) {
  MOE_ASSIGN_OR_RETURN(const std::vector<int> batches, BatchSizes());
  const MixtralConfig& c = runner->config();
  const int n_prompt = absl::GetFlag(FLAGS_bench_prompt_tokens);
  const int n_decode = absl::GetFlag(FLAGS_bench_decode_tokens);
  if (n_prompt < 1 || n_decode < 0 || n_prompt + n_decode > c.max_position_embeddings) {
    return absl::InvalidArgumentError(
        "--bench-prompt-tokens/--bench-decode-tokens do not fit the model's context");
  }
  std::printf("machine: %s, %u cores visible; %s\n", CpuModel().c_str(),
              std::thread::hardware_concurrency(), kernels::DescribeCpuPaths().c_str());
  kernels::Backend* backend = runner->backend();
  std::printf("attention side computes on: %s\n", backend->Describe().c_str());
  if (backend->host_memory()) {
    std::printf("CPU products: %s\n", DescribeCpuProducts(*backend, weights).c_str());
  }
  const WeightCosts cost(weights);
  const DType dtype = weights.expert_dtype;
  std::printf("model: %s; held as: %s; %.2f GB mapped, %.2f GB held by this process\n",
              c.Summary().c_str(), DescribeHeldWeights(weights).c_str(),
              weights.mapped_bytes / 1e9, HeldBytes(weights) / 1e9);
  // Peak memory now, before the bandwidth probe's buffer and any batch's KV cache.
  std::printf("peak RSS of this process after loading: %.2f GB\n", PeakResidentBytes() / 1e9);
  const MachineLimits limits = MeasureLimits(backend, dtype);
  const double active = cost.ActiveBytesPerToken();
  std::printf(
      "decode roofline at batch 1: %.2f tokens/s (%.3f GB of active weights per token: "
      "experts %.3f, attention and router %.3f, lm_head %.3f)\n",
      limits.bandwidth / active, active / 1e9, cost.layers * cost.top_k * cost.expert_bytes / 1e9,
      cost.dense_bytes / 1e9, cost.lm_head_bytes / 1e9);
  for (int batch : batches) {
    MOE_RETURN_IF_ERROR(RunBatch(runner, cost, limits, batch, times, exchange));
  }
  return absl::OkStatus();
}

}  // namespace moe::cli
