// Fuzz target: a .safetensors file's header and layout (SafetensorsFile::FromBuffer), as a worker
// meets a hostile checkpoint. Every tensor it accepts must lie inside the buffer: reading each
// one's first and last byte puts AddressSanitizer on guard.
#include <cstddef>
#include <cstdint>

#include "core/model/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto file = moe::SafetensorsFile::FromBuffer(data, static_cast<int64_t>(size), "fuzz");
  if (!file.ok()) return 0;
  volatile uint8_t sink = 0;
  for (const auto& [name, t] : (*file)->tensors()) {
    if (t.n_bytes > 0) {
      sink = sink ^ static_cast<const uint8_t*>(t.data)[0] ^
             static_cast<const uint8_t*>(t.data)[t.n_bytes - 1];
    }
  }
  return 0;
}
