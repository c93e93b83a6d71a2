// moe-quantize: writes a quantized copy of a checkpoint (core/model/quantized_checkpoint.h), so
// that every later start reads the weights at their quantized size instead of quantizing 16-bit
// weights again: moe-quantize --model models/slice --out models/slice-int4 --quantize int4.
#include <chrono>
#include <cstdio>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "core/cli/cli.h"
#include "core/model/quantized_checkpoint.h"

ABSL_FLAG(std::string, out, "", "directory to write the quantized checkpoint into");
ABSL_FLAG(double, shard_gb, 4.0, "start a new safetensors shard past this many GB");

int main(int argc, char** argv) {
  using namespace moe;
  cli::Init(argc, argv,
            "moe-quantize --model DIR --out DIR --quantize int8|int4|experts=int4,... "
            "[--shard-gb 4] [--threads N]");
  const std::string out = absl::GetFlag(FLAGS_out);
  if (out.empty()) return cli::Fail(absl::InvalidArgumentError("--out is required"));
  // Past 1e6 GB the byte count would overflow; one shard of everything is what such a value means.
  if (!(absl::GetFlag(FLAGS_shard_gb) > 0) || absl::GetFlag(FLAGS_shard_gb) > 1e6)
    return cli::Fail(absl::InvalidArgumentError("--shard-gb must be in (0, 1e6]"));
  QuantizeCheckpointOptions options;
  options.formats = cli::QuantizeFlag();
  options.shard_bytes = static_cast<int64_t>(absl::GetFlag(FLAGS_shard_gb) * 1e9);
  const auto start = std::chrono::steady_clock::now();
  int last_percent = -1;
  options.progress = [&](int64_t done, int64_t all, int64_t bytes) {
    const int percent = static_cast<int>(100 * done / all);
    if (percent / 10 != last_percent / 10 || done == all) {
      std::fprintf(stderr, "moe-quantize: %3d%% (%lld of %lld tensors, %.2f GB written)\n", percent,
                   static_cast<long long>(done), static_cast<long long>(all), bytes / 1e9);
      last_percent = percent;
    }
  };
  if (auto s = QuantizeCheckpoint(cli::ModelDir(), out, options); !s.ok()) return cli::Fail(s);
  std::printf("moe-quantize: wrote %s (%s) in %.1f s\n", out.c_str(),
              FormatSpec(options.formats).c_str(),
              std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  return 0;
}
