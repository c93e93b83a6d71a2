// A wall around libsentencepiece: Debian's sentencepiece header declares its own absl::string_view,
// which collides with the real abseil, so only sentencepiece_shim.cc may include it, and this
// header uses the standard library alone.
#pragma once

#include <memory>
#include <string>
#include <vector>

namespace moe::spm {

class Processor {
 public:
  // Returns null and sets *error when the model cannot be loaded.
  static std::unique_ptr<Processor> Load(const std::string& path, std::string* error);
  virtual ~Processor() = default;
  virtual std::vector<int> Encode(const std::string& text) const = 0;
  virtual std::string Decode(const std::vector<int>& ids) const = 0;
  virtual int PieceSize() const = 0;
  virtual int BosId() const = 0;
  virtual int EosId() const = 0;
};

}  // namespace moe::spm
