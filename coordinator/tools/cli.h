// Shared start-up for the command-line tools: flag spelling, CPU set-up, one-line errors.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "coordinator/model_runner.h"
#include "coordinator/telemetry/routing_trace.h"
#include "kernels/backend.h"

namespace moe::cli {

// Parses absl flags after rewriting "--max-new-tokens=3" to "--max_new_tokens=3", so the
// documented dash spellings and abseil's underscore names both work. A value that itself starts
// with "--" must be attached with '='. Re-executes once first if OpenBLAS needs its core type set
// (see kernels/cpu/cpu_features.h), and sizes the CPU thread pool from --threads. Returns the
// positional arguments.
std::vector<char*> Init(int argc, char** argv, const char* usage);

// --model, required: exits with a one-line error when missing.
std::string ModelDir();

// --device, --cuda-device and --cpu-numerics; exits with a one-line error on a bad value.
kernels::DeviceOptions DeviceFlags();

// Prints "<tool>: error: <message>" on one line to stderr and returns exit code 1.
int Fail(const absl::Status& status);

// --routing-trace FILE: records every token's routing through `runner` into FILE
// (docs/routing-trace-format.md). Null when the flag is empty; keep the writer alive while the
// runner runs (it flushes and closes when destroyed). placement: null in a single process.
absl::StatusOr<std::unique_ptr<RoutingTraceWriter>> OpenRoutingTrace(ModelRunner* runner,
                                                                     const ExpertPlacement* placement);

// The tokenizer to use: <model_dir>/tokenizer.model if present, else the copy next to the binary.
std::string DefaultTokenizerPath(const std::string& model_dir);

}  // namespace moe::cli
