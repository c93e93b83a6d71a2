// What this CPU can do at most, measured: memory read bandwidth and peak arithmetic rates with
// the kernels' threads. The benchmarks print their figures next to these limits.
#pragma once

#include <cstdint>

namespace moe::kernels {

// Bytes per second read from a fresh buffer of `bytes` (far beyond the caches), every thread
// summing its share with SIMD loads; best of 5 passes.
double MeasureReadBandwidth(int64_t bytes);

// FLOP per second of a register-only loop of vdpbf16ps (each one 32 multiply-adds, 64 FLOP) on
// every thread, best of 3; 0 when the CPU lacks AVX512_BF16.
double MeasureBf16DotPeak();

// The same for AMX tile multiplies (tdpbf16ps on 16 x 16 tiles, 16384 FLOP each); 0 when the
// process has no AMX (packed::HasAmx).
double MeasureAmxBf16Peak();

// The same for float32 FMAs (vfmadd231ps on 16 lanes, 32 FLOP); 0 without AVX-512.
double MeasureF32FmaPeak();

}  // namespace moe::kernels
