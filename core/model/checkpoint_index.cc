#include "core/model/checkpoint_index.h"

#include <sys/stat.h>

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "core/base/status_macros.h"
#include "nlohmann/json.hpp"

namespace moe {
namespace {

bool FileExists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

}  // namespace

std::optional<DType> StoredDType(const SafetensorsTensor& t) {
  if (t.dtype == "F32") return DType::kF32;
  if (t.dtype == "BF16") return DType::kBF16;
  if (t.dtype == "F16") return DType::kF16;
  if (t.dtype == "I8") return DType::kI8;
  if (t.dtype == "U8") return DType::kQ4;
  return std::nullopt;
}

absl::Status CheckpointIndex::Open(const std::string& dir,
                                   std::vector<std::unique_ptr<SafetensorsFile>>* files) {
  const std::string single = dir + "/model.safetensors";
  const std::string index = dir + "/model.safetensors.index.json";
  if (FileExists(index)) return OpenSharded(dir, index, files);
  if (!FileExists(single)) {
    return absl::NotFoundError(absl::StrCat(dir, ": neither model.safetensors nor ",
                                            "model.safetensors.index.json exists"));
  }
  MOE_ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(single));
  for (const auto& [name, t] : file->tensors()) by_name_[name] = &t;
  files->push_back(std::move(file));
  return absl::OkStatus();
}

absl::StatusOr<const SafetensorsTensor*> CheckpointIndex::Get(const std::string& name) const {
  auto it = by_name_.find(name);
  if (it == by_name_.end()) return absl::NotFoundError(absl::StrCat("missing tensor '", name, "'"));
  return it->second;
}

absl::Status CheckpointIndex::OpenSharded(const std::string& dir, const std::string& index,
                                          std::vector<std::unique_ptr<SafetensorsFile>>* files) {
  std::ifstream in(index);
  std::stringstream ss;
  ss << in.rdbuf();
  const auto j = nlohmann::json::parse(ss.str(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object() || !j.contains("weight_map") ||
      !j["weight_map"].is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(index, ": expected a JSON object with weight_map"));
  }
  std::map<std::string, SafetensorsFile*> shards;
  for (const auto& [name, shard] : j["weight_map"].items()) {
    if (!shard.is_string())
      return absl::InvalidArgumentError(absl::StrCat(index, ": bad entry for ", name));
    const std::string file_name = shard.get<std::string>();
    if (file_name.find('/') != std::string::npos || file_name.empty() || file_name[0] == '.') {
      return absl::InvalidArgumentError(
          absl::StrCat(index, ": shard name '", file_name, "' must be a plain file name"));
    }
    auto it = shards.find(file_name);
    if (it == shards.end()) {
      MOE_ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(dir + "/" + file_name));
      it = shards.emplace(file_name, file.get()).first;
      files->push_back(std::move(file));
    }
    const SafetensorsTensor* t = it->second->Find(name);
    if (t == nullptr) {
      return absl::NotFoundError(absl::StrCat("tensor '", name, "' is listed in ", index,
                                              " but missing from ", file_name));
    }
    by_name_[name] = t;
  }
  return absl::OkStatus();
}

}  // namespace moe
