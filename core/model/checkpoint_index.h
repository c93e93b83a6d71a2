// CheckpointIndex: a checkpoint directory's tensors by name, across model.safetensors or the
// shards model.safetensors.index.json names, each file memory-mapped and its header checked.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/model/safetensors.h"
#include "kernels/dtype.h"

namespace moe {

// A tensor's safetensors dtype as ours: F32, BF16, F16, I8 (INT8 levels) or U8 (INT4 levels,
// kernels/quant.h); nullopt for any other.
std::optional<DType> StoredDType(const SafetensorsTensor& t);

class CheckpointIndex {
 public:
  // Opens dir's files into *files (which keeps the mappings alive; the index points into them).
  absl::Status Open(const std::string& dir, std::vector<std::unique_ptr<SafetensorsFile>>* files);

  bool Has(const std::string& name) const { return by_name_.count(name) > 0; }
  absl::StatusOr<const SafetensorsTensor*> Get(const std::string& name) const;
  // Every tensor, by name.
  const std::map<std::string, const SafetensorsTensor*>& tensors() const { return by_name_; }

 private:
  absl::Status OpenSharded(const std::string& dir, const std::string& index,
                           std::vector<std::unique_ptr<SafetensorsFile>>* files);

  std::map<std::string, const SafetensorsTensor*> by_name_;
};

}  // namespace moe
