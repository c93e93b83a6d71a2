// Start-up shared by every program (the coordinator, the workers, the single-process tools): flag
// spelling, the process-wide CPU set-up, the flags that choose a device, one-line errors. Below
// coordinator/ and worker/, so neither reaches into the other for it.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/model/weight_formats.h"
#include "kernels/backend.h"

namespace moe::cli {

// Parses absl flags after rewriting "--max-tokens=3" to "--max_tokens=3", so the
// documented dash spellings and abseil's underscore names both work. A value that itself starts
// with "--" must be attached with '='. Re-executes once first if OpenBLAS needs its core type set
// (see below), reads MOE_CPU_AMX, and sizes the CPU thread pool from --threads. Returns the
// positional arguments.
std::vector<char*> Init(int argc, char** argv, const char* usage);

// --model, required: exits with a one-line error when missing.
std::string ModelDir();

// --device, --cuda-device, --cpu-numerics and the launcher's local rank (Open MPI's
// OMPI_COMM_WORLD_LOCAL_RANK, 0 outside mpirun); exits with a one-line error on a bad value.
kernels::DeviceOptions DeviceFlags();

// --quantize: which tensor classes to hold quantized (core/model/weight_formats.h); exits with a
// one-line error on a bad value.
WeightFormats QuantizeFlag();

// kernels::MakeBackend, its errors phrased as the flags that asked for the device.
absl::StatusOr<std::unique_ptr<kernels::Backend>> MakeBackend(const kernels::DeviceOptions& device);

// Prints "<tool>: error: <message>" on one line to stderr and returns exit code 1.
int Fail(const absl::Status& status);

// The tokenizer to use: <model_dir>/tokenizer.model if present, else the copy next to the binary.
std::string DefaultTokenizerPath(const std::string& model_dir);

}  // namespace moe::cli
