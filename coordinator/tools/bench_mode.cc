// Benchmark mode: prefill and decode speed with a per-op breakdown, peak memory, and the decode
// roofline from this machine's measured memory bandwidth. Prints figures and judges nothing.
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstdio>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "coordinator/tools/modes.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/simd_kernels.h"
#include "kernels/cpu/thread_pool.h"

ABSL_FLAG(int, bench_prompt_tokens, 512, "benchmark: prefill length");
ABSL_FLAG(int, bench_decode_tokens, 32, "benchmark: decode steps after the prefill");
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

// Read bandwidth with the engine's threads: every thread sums its share of a buffer far larger
// than the caches with SIMD loads; best of several passes.
double MeasureReadBandwidth(int64_t bytes) {
  const int64_t n = bytes / 4;
  std::vector<float> buf(static_cast<size_t>(n));
  const int64_t tasks = kernels::CpuThreads();
  kernels::ParallelFor(tasks, [&](int64_t t) {  // first touch from the threads that will read
    for (int64_t i = t * n / tasks; i < (t + 1) * n / tasks; ++i) buf[i] = 1.0f;
  });
  std::vector<float> sums(static_cast<size_t>(tasks));
  double best = 0;
  for (int pass = 0; pass < 5; ++pass) {
    const auto start = Clock::now();
    kernels::ParallelFor(tasks, [&](int64_t t) {
      const int64_t b = t * n / tasks, e = (t + 1) * n / tasks;
      sums[t] = kernels::simd::Sum(buf.data() + b, e - b);
    });
    best = std::max(best, static_cast<double>(bytes) / Seconds(start, Clock::now()));
  }
  volatile float sink = sums[0];
  (void)sink;
  return best;
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

// Bytes of weights one decode step reads: attention and router of every layer, top-k experts per
// layer, one embedding row, the lm_head. Computed from the config so that it also holds on a
// coordinator that maps no expert; experts are taken to share the attention weights' dtype.
double ActiveBytesPerToken(const ModelWeights& w) {
  auto bytes = [](const WeightMatrix& m) { return static_cast<double>(m.rows * m.cols * DTypeSize(m.dtype)); };
  const MixtralConfig& c = w.config;
  double total = bytes(w.lm_head) + static_cast<double>(c.hidden_size * DTypeSize(w.embed.dtype));
  for (const LayerWeights& l : w.layers) {
    const AttentionLayerWeights& a = l.attention;
    total += bytes(a.q_proj) + bytes(a.k_proj) + bytes(a.v_proj) + bytes(a.o_proj) + bytes(a.router);
    total += static_cast<double>(c.num_experts_per_tok) * 3 * c.intermediate_size * c.hidden_size *
             DTypeSize(a.q_proj.dtype);
  }
  return total;
}

void PrintBreakdown(const char* phase, const OpTimes& times, double total, int layers,
                    int steps) {
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
}

}  // namespace

absl::Status RunBenchMode(ModelRunner* runner, const ModelWeights& weights, OpTimes* times,
                          const BenchHooks& hooks) {
  std::printf("machine: %s, %u cores visible; %s\n", CpuModel().c_str(),
              std::thread::hardware_concurrency(), kernels::DescribeCpuPaths().c_str());
  kernels::Backend* backend = runner->backend();
  const bool on_device = !backend->host_memory();
  std::printf("attention side computes on: %s\n", backend->Describe().c_str());
  const MixtralConfig& c = runner->config();
  std::printf("model: %s, weights %s, %.2f GB mapped by this process\n", c.Summary().c_str(),
              DTypeName(weights.lm_head.dtype), weights.mapped_bytes / 1e9);

  const int n_prompt = absl::GetFlag(FLAGS_bench_prompt_tokens);
  const int n_decode = absl::GetFlag(FLAGS_bench_decode_tokens);
  if (n_prompt < 1 || n_prompt + n_decode > c.max_position_embeddings) {
    return absl::InvalidArgumentError("--bench-prompt-tokens/--bench-decode-tokens do not fit the model's context");
  }
  std::mt19937 rng(1234);
  std::vector<int32_t> prompt(static_cast<size_t>(n_prompt));
  for (auto& t : prompt) t = static_cast<int32_t>(rng() % static_cast<uint32_t>(c.vocab_size));
  prompt[0] = c.bos_token_id;

  std::vector<float> logits;
  // Warm-up, the same work once untimed: faults the mapped weights in (every expert, the
  // embedding rows) and sizes every scratch buffer, so the timings below see steady state.
  {
    KvCache warm = runner->NewCache();
    const SequenceChunk chunk{&warm, prompt, false};
    if (auto s = runner->Forward({&chunk, 1}, &logits); !s.ok()) return s;
    for (int i = 0; i < std::min(n_decode, 4); ++i) {
      const int32_t next[] = {1};
      const SequenceChunk step{&warm, next, false};
      if (auto s = runner->Forward({&step, 1}, &logits); !s.ok()) return s;
    }
  }

  KvCache cache = runner->NewCache();
  times->Reset();
  if (hooks.reset) hooks.reset();
  auto start = Clock::now();
  const SequenceChunk prefill{&cache, prompt, false};
  if (auto s = runner->Forward({&prefill, 1}, &logits); !s.ok()) return s;
  const double prefill_s = Seconds(start, Clock::now());
  // Matrix work of the prefill: 2 flops per active weight per token (attention scores not counted).
  const double active = ActiveBytesPerToken(weights);
  const double prefill_flops = 2.0 * active / DTypeSize(weights.lm_head.dtype) * n_prompt;
  std::printf("prefill: %d tokens in %.3f s = %.1f tokens/s (%.1f TFLOP/s of weight GEMMs)\n",
              n_prompt, prefill_s, n_prompt / prefill_s, prefill_flops / prefill_s / 1e12);
  PrintBreakdown("prefill", *times, prefill_s, c.num_hidden_layers, 1);
  if (hooks.report) hooks.report("prefill");

  times->Reset();
  if (hooks.reset) hooks.reset();
  start = Clock::now();
  // Greedy decoding as the server does it: the next token is picked where the logits are (on a
  // GPU only the winner's id comes back).
  int32_t next[] = {static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin())};
  Sampler greedy(SamplingParams{});
  Sampler* samplers[] = {&greedy};
  std::vector<int32_t> sampled;
  for (int i = 0; i < n_decode; ++i) {
    const SequenceChunk step{&cache, next, false};
    if (auto s = runner->Forward({&step, 1}, /*logits=*/nullptr); !s.ok()) return s;
    if (auto s = runner->SampleNext(samplers, &sampled); !s.ok()) return s;
    next[0] = sampled[0];
  }
  const double decode_s = Seconds(start, Clock::now());
  // Peak memory before the bandwidth buffer below inflates it.
  const int64_t peak_rss = PeakResidentBytes();
  const int64_t probe_bytes = int64_t{absl::GetFlag(FLAGS_bandwidth_mib)} << 20;
  double bandwidth;
  if (on_device) {
    bandwidth = MeasureDeviceBandwidth(backend, probe_bytes);
    std::printf("device memory bandwidth (measured, device-to-device copy, read + write): %.1f GB/s\n",
                bandwidth / 1e9);
  } else {
    bandwidth = MeasureReadBandwidth(probe_bytes);
    std::printf("memory read bandwidth (measured, %d threads): %.1f GB/s\n", kernels::CpuThreads(),
                bandwidth / 1e9);
  }
  const double roofline = bandwidth / active;
  const double decode_tps = n_decode / decode_s;
  std::printf("decode:  %d tokens in %.3f s = %.2f tokens/s; roofline %.2f tokens/s "
              "(%.3f GB active weights per token at %.1f GB/s): %.0f%% of roofline\n",
              n_decode, decode_s, decode_tps, roofline, active / 1e9, bandwidth / 1e9,
              100.0 * decode_tps / roofline);
  PrintBreakdown("decode", *times, decode_s, c.num_hidden_layers, n_decode);
  if (hooks.report) hooks.report("decode");

  std::printf("peak RSS of this process: %.2f GB (KV cache %.1f MB)\n", peak_rss / 1e9,
              cache.bytes() / 1e6);
  return absl::OkStatus();
}

}  // namespace moe::cli

