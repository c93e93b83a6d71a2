// What this CPU can do at most, measured: memory read bandwidth and peak arithmetic rates with
// the kernels' threads. The benchmarks print their figures next to these limits.
#pragma once

#include <cstdint>

namespace moe::kernels {

// Bytes per second read from a fresh buffer of `bytes` (far beyond the caches, in huge pages
// where the kernel gives them), every thread summing its share with SIMD loads and a software
// prefetch, as the kernels stream weights; best of 5 passes.
double MeasureReadBandwidth(int64_t bytes);

// FLOP per second of a register-only loop of vdpbf16ps (each one 32 multiply-adds, 64 FLOP) on
// every thread, best of 3; 0 when the CPU lacks AVX512_BF16.
double MeasureBf16DotPeak();

// The same for AMX tile multiplies (tdpbf16ps on 16 x 16 tiles, 16384 FLOP each); 0 when the
// process has no AMX (packed::HasAmx).
double MeasureAmxBf16Peak();

// The same for float32 FMAs (vfmadd231ps on 16 lanes, 32 FLOP; on 8 lanes, 16 FLOP, on CPUs
// with AVX2 but not AVX-512); 0 without either.
double MeasureF32FmaPeak();

// Operations per second of the quantized kernels' integer product (kernels/cpu/quant_matmul.h):
// vpmaddubsw, 32 byte multiply-adds (64 operations) each, in a register-only loop; 0 without
// AVX2. INT4 weights take one per 32 multiply-adds, INT8 weights two (their bytes go in as two
// nibbles: whole bytes could overflow the instruction's int16 sums).
double MeasureInt8DotPeak();

}  // namespace moe::kernels
