#include "core/model/quantized_checkpoint.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/base/status_macros.h"
#include "core/model/checkpoint_index.h"
#include "core/model/config.h"
#include "core/model/model_weights.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/quant.h"
#include "nlohmann/json.hpp"

namespace moe {
namespace {

using kernels::WeightFormat;
using nlohmann::json;

// The class a tensor belongs to for --quantize, by its Hugging Face name; null: never quantized
// (norms, the router, the embedding).
const WeightFormat* ClassFormat(const std::string& name, const WeightFormats& f) {
  if (!absl::EndsWith(name, ".weight")) return nullptr;
  if (absl::StrContains(name, ".block_sparse_moe.experts.")) return &f.experts;
  if (absl::StrContains(name, ".self_attn.") && absl::EndsWith(name, "_proj.weight"))
    return &f.attention;
  if (name == "lm_head.weight") return &f.lm_head;
  return nullptr;
}

absl::StatusOr<DType> FloatDType(const SafetensorsTensor& t, const std::string& name) {
  const std::optional<DType> dtype = StoredDType(t);
  if (!dtype.has_value() || kernels::IsQuantized(*dtype)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor '", name, "' is ", t.dtype, ": only F32, BF16 and F16 matrices can be quantized"));
  }
  return *dtype;
}

// One tensor of the output: where it goes.
struct OutTensor {
  std::string name, dtype;
  std::vector<int64_t> shape;
  int64_t bytes = 0;
  int64_t elem = 1;
  int shard = 0;
  int64_t offset = 0;  // in its shard's data area
};

// One unit of work: a source tensor copied, or quantized into data, scale (and min).
struct Job {
  const SafetensorsTensor* source = nullptr;
  std::string source_name;
  DType stored = DType::kF32;  // the source's, when quantized
  DType held = DType::kF32;    // quantized dtype, or the source's own for a copy
  bool quantize = false;
  std::vector<size_t> outputs;  // into the plan's tensors: [data] or [data, scale(, min)]
};

struct Plan {
  std::vector<OutTensor> tensors;
  std::vector<Job> jobs;
  int shards = 0;
};

size_t Add(Plan* plan, std::string name, std::string dtype, std::vector<int64_t> shape,
           int64_t elem) {
  OutTensor t;
  t.name = std::move(name);
  t.dtype = std::move(dtype);
  t.shape = std::move(shape);
  t.elem = elem;
  t.bytes = elem;
  for (int64_t d : t.shape) t.bytes *= d;
  plan->tensors.push_back(std::move(t));
  return plan->tensors.size() - 1;
}

absl::Status PlanJob(const std::string& out_name, const std::string& source_name,
                     const SafetensorsTensor* source, const WeightFormat* format, Plan* plan) {
  if (source->dtype == "I8" || source->dtype == "U8") {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor '", source_name, "' is already quantized: quantize the 16-bit checkpoint"));
  }
  Job job;
  job.source = source;
  job.source_name = source_name;
  const bool matrix = source->shape.size() == 2;
  if (format != nullptr && *format != WeightFormat::kAsStored && matrix) {
    MOE_ASSIGN_OR_RETURN(job.stored, FloatDType(*source, source_name));
    job.held = kernels::HeldDType(job.stored, *format);
    job.quantize = true;
    const int64_t rows = source->shape[0], cols = source->shape[1];
    const int64_t groups = kernels::QuantGroups(cols);
    if (job.held == DType::kI8) {
      job.outputs.push_back(Add(plan, out_name, "I8", {rows, cols}, 1));
      job.outputs.push_back(Add(plan, out_name + "_scale", "F32", {rows}, 4));
    } else {
      job.outputs.push_back(Add(plan, out_name, "U8", {rows, (cols + 1) / 2}, 1));
      job.outputs.push_back(Add(plan, out_name + "_scale", "F16", {rows, groups}, 2));
      job.outputs.push_back(Add(plan, out_name + "_min", "F16", {rows, groups}, 2));
    }
  } else {
    int64_t elements = 1;
    for (int64_t d : source->shape) elements *= d;
    const int64_t elem = elements > 0 ? source->n_bytes / elements : 1;
    job.outputs.push_back(
        Add(plan, out_name, source->dtype, source->shape, std::max<int64_t>(elem, 1)));
  }
  plan->jobs.push_back(std::move(job));
  return absl::OkStatus();
}

absl::StatusOr<Plan> MakePlan(const CheckpointIndex& index, const MixtralConfig& config,
                              const QuantizeCheckpointOptions& options) {
  Plan plan;
  for (const auto& [name, tensor] : index.tensors()) {
    MOE_RETURN_IF_ERROR(PlanJob(name, name, tensor, ClassFormat(name, options.formats), &plan));
  }
  // A tied model: the embedding stays for lookups; the quantized output layer is its own tensor.
  if (config.tie_word_embeddings && !index.Has("lm_head.weight") &&
      options.formats.lm_head != WeightFormat::kAsStored) {
    MOE_ASSIGN_OR_RETURN(const SafetensorsTensor* embed, index.Get("model.embed_tokens.weight"));
    MOE_RETURN_IF_ERROR(PlanJob("lm_head.weight", "model.embed_tokens.weight", embed,
                                &options.formats.lm_head, &plan));
  }
  // Shards: whole jobs, in name order, a new file once the next job would pass shard_bytes.
  int64_t in_shard = 0;
  for (const Job& job : plan.jobs) {
    int64_t bytes = 0;
    for (size_t o : job.outputs) bytes += plan.tensors[o].bytes;
    if (in_shard > 0 && in_shard + bytes > options.shard_bytes) {
      ++plan.shards;
      in_shard = 0;
    }
    in_shard += bytes;
    for (size_t o : job.outputs) plan.tensors[o].shard = plan.shards;
  }
  ++plan.shards;
  // Within a shard, wider elements first (then by name), so every tensor starts aligned to its
  // element size, as the safetensors library writes them; the loader requires it.
  std::vector<size_t> order(plan.tensors.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    const OutTensor &x = plan.tensors[a], &y = plan.tensors[b];
    if (x.shard != y.shard) return x.shard < y.shard;
    if (x.elem != y.elem) return x.elem > y.elem;
    return x.name < y.name;
  });
  std::vector<int64_t> offset(static_cast<size_t>(plan.shards), 0);
  for (size_t i : order) {
    plan.tensors[i].offset = offset[plan.tensors[i].shard];
    offset[plan.tensors[i].shard] += plan.tensors[i].bytes;
  }
  return plan;
}

std::string ShardName(int shard, int shards) {
  if (shards == 1) return "model.safetensors";
  return absl::StrFormat("model-%05d-of-%05d.safetensors", shard + 1, shards);
}

// An output file: the header written, the data area sized; tensors land with pwrite.
class ShardFile {
 public:
  ~ShardFile() {
    if (fd_ >= 0) ::close(fd_);
  }
  absl::Status Create(const std::string& path, const json& header, int64_t data_bytes) {
    path_ = path;
    std::string text = header.dump();
    text.append((8 - text.size() % 8) % 8, ' ');  // the data area starts 8-byte aligned
    fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd_ < 0) return Error("create");
    const uint64_t n = text.size();
    char length[8];
    for (int i = 0; i < 8; ++i) length[i] = static_cast<char>((n >> (8 * i)) & 0xff);
    data_start_ = 8 + static_cast<int64_t>(n);
    if (::ftruncate(fd_, data_start_ + data_bytes) != 0) return Error("size");
    MOE_RETURN_IF_ERROR(Write(length, 8, 0));
    return Write(text.data(), static_cast<int64_t>(text.size()), 8);
  }
  // bytes at `offset` of the data area.
  absl::Status WriteData(const void* data, int64_t bytes, int64_t offset) {
    return Write(data, bytes, data_start_ + offset);
  }
  absl::Status Close() {
    const int fd = fd_;
    fd_ = -1;
    const bool synced = ::fsync(fd) == 0;
    const bool closed = ::close(fd) == 0;
    return synced && closed ? absl::OkStatus() : Error("finish");
  }

 private:
  absl::Status Write(const void* data, int64_t bytes, int64_t at) {
    const char* p = static_cast<const char*>(data);
    while (bytes > 0) {
      const ssize_t n =
          ::pwrite(fd_, p, static_cast<size_t>(std::min<int64_t>(bytes, int64_t{1} << 30)), at);
      if (n <= 0) return Error("write");
      p += n;
      at += n;
      bytes -= n;
    }
    return absl::OkStatus();
  }
  absl::Status Error(const char* what) const {
    return absl::InternalError(
        absl::StrCat("cannot ", what, " ", path_, ": ", std::strerror(errno)));
  }
  std::string path_;
  int fd_ = -1;
  int64_t data_start_ = 0;
};

// The job's source quantized into its outputs' buffers, rows split over the CPU threads.
void Quantize(const Job& job, std::vector<uint8_t>* data, std::vector<uint8_t>* scales,
              std::vector<uint8_t>* mins) {
  const int64_t rows = job.source->shape[0], cols = job.source->shape[1];
  const kernels::WeightMatrix w{job.stored, job.source->data, rows, cols};
  data->resize(static_cast<size_t>(kernels::QuantDataBytes(job.held, rows, cols)));
  const int64_t groups = kernels::QuantGroups(cols);
  scales->resize(static_cast<size_t>(job.held == DType::kI8 ? rows * 4 : rows * groups * 2));
  mins->resize(static_cast<size_t>(job.held == DType::kI8 ? 0 : rows * groups * 2));
  constexpr int64_t kRowsPerTask = 16;
  kernels::ParallelFor((rows + kRowsPerTask - 1) / kRowsPerTask, [&](int64_t t) {
    const int64_t r0 = t * kRowsPerTask, r1 = std::min(rows, r0 + kRowsPerTask);
    if (job.held == DType::kI8) {
      kernels::QuantizeRowsInt8(w, r0, r1, reinterpret_cast<int8_t*>(data->data()),
                                reinterpret_cast<float*>(scales->data()));
    } else {
      kernels::QuantizeRowsInt4(w, r0, r1, data->data(),
                                reinterpret_cast<uint16_t*>(scales->data()),
                                reinterpret_cast<uint16_t*>(mins->data()));
    }
  });
}

absl::Status CopyFile(const std::string& from, const std::string& to) {
  std::ifstream in(from, std::ios::binary);
  std::ofstream out(to, std::ios::binary | std::ios::trunc);
  out << in.rdbuf();
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", to));
  return absl::OkStatus();
}

absl::Status WriteText(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

json QuantizationConfig(const WeightFormats& f) {
  return json{{"quant_method", kernels::kQuantMethod},
              {"format_version", kernels::kQuantFormatVersion},
              {"experts", FormatName(f.experts)},
              {"attention", FormatName(f.attention)},
              {"lm_head", FormatName(f.lm_head)},
              {"int8", "I8 NAME [rows, cols] levels, F32 NAME_scale [rows]: w = scale * q"},
              {"int4",
               "U8 NAME [rows, ceil(cols/2)] two levels a byte (low nibble first), F16 "
               "NAME_scale and NAME_min [rows, ceil(cols/64)]: w = scale * q + min"},
              {"group_size", kernels::kQuantBlock}};
}

}  // namespace

absl::Status QuantizeCheckpoint(const std::string& in_dir, const std::string& out_dir,
                                const QuantizeCheckpointOptions& options) {
  if (!options.formats.any_quantized()) {
    return absl::InvalidArgumentError(
        "--quantize names no class to quantize (e.g. --quantize int8, or experts=int4)");
  }
  MOE_ASSIGN_OR_RETURN(const MixtralConfig config, LoadMixtralConfig(in_dir));
  std::vector<std::unique_ptr<SafetensorsFile>> files;
  CheckpointIndex index;
  MOE_RETURN_IF_ERROR(index.Open(in_dir, &files));
  MOE_ASSIGN_OR_RETURN(const Plan plan, MakePlan(index, config, options));
  if (::mkdir(out_dir.c_str(), 0755) != 0 && errno != EEXIST) {
    return absl::InternalError(absl::StrCat("cannot create ", out_dir, ": ", std::strerror(errno)));
  }
  // Writing over the input would truncate the files being read (through any path to them).
  struct stat in_st {
  }, out_st{};
  if (::stat(in_dir.c_str(), &in_st) == 0 && ::stat(out_dir.c_str(), &out_st) == 0 &&
      in_st.st_dev == out_st.st_dev && in_st.st_ino == out_st.st_ino) {
    return absl::InvalidArgumentError(
        absl::StrCat("--out ", out_dir, " is the checkpoint being read: write elsewhere"));
  }

  std::vector<std::unique_ptr<ShardFile>> shards;
  json weight_map = json::object();
  for (int s = 0; s < plan.shards; ++s) {
    json header = json::object();
    header["__metadata__"] = {{"format", "pt"}, {"moe_quantization", FormatSpec(options.formats)}};
    int64_t data_bytes = 0;
    for (const OutTensor& t : plan.tensors) {
      if (t.shard != s) continue;
      header[t.name] = {
          {"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {t.offset, t.offset + t.bytes}}};
      data_bytes = std::max(data_bytes, t.offset + t.bytes);
      weight_map[t.name] = ShardName(s, plan.shards);
    }
    shards.push_back(std::make_unique<ShardFile>());
    MOE_RETURN_IF_ERROR(
        shards.back()->Create(out_dir + "/" + ShardName(s, plan.shards), header, data_bytes));
  }

  std::vector<uint8_t> data, scales, mins;
  int64_t written = 0, done = 0;
  for (const Job& job : plan.jobs) {
    for (const auto& file : files) file->PopulatePages(job.source->data, job.source->n_bytes);
    const OutTensor& first = plan.tensors[job.outputs[0]];
    ShardFile* shard = shards[first.shard].get();
    if (job.quantize) {
      MOE_RETURN_IF_ERROR(CheckFinite(
          job.source_name, kernels::WeightMatrix{job.stored, job.source->data, job.source->shape[0],
                                                 job.source->shape[1]}));
      Quantize(job, &data, &scales, &mins);
      const std::vector<uint8_t>* parts[] = {&data, &scales, &mins};
      for (size_t i = 0; i < job.outputs.size(); ++i) {
        const OutTensor& t = plan.tensors[job.outputs[i]];
        MOE_RETURN_IF_ERROR(shard->WriteData(parts[i]->data(), t.bytes, t.offset));
        written += t.bytes;
      }
    } else {
      MOE_RETURN_IF_ERROR(shard->WriteData(job.source->data, first.bytes, first.offset));
      written += first.bytes;
    }
    for (const auto& file : files) {
      if (file->ReleasePages(job.source->data, job.source->n_bytes)) break;
    }
    if (options.progress) options.progress(++done, static_cast<int64_t>(plan.jobs.size()), written);
  }
  for (auto& shard : shards) MOE_RETURN_IF_ERROR(shard->Close());

  if (plan.shards > 1) {
    json index_json = {{"metadata", {{"total_size", written}}}, {"weight_map", weight_map}};
    MOE_RETURN_IF_ERROR(WriteText(out_dir + "/model.safetensors.index.json", index_json.dump(2)));
  } else {
    ::unlink((out_dir + "/model.safetensors.index.json").c_str());  // a stale one would win
  }
  std::ifstream config_in(in_dir + "/config.json");
  std::stringstream config_text;
  config_text << config_in.rdbuf();
  json config_json = json::parse(config_text.str(), nullptr, /*allow_exceptions=*/false);
  if (config_json.is_discarded())
    return absl::InvalidArgumentError(in_dir + "/config.json is not JSON");
  config_json["quantization_config"] = QuantizationConfig(options.formats);
  MOE_RETURN_IF_ERROR(WriteText(out_dir + "/config.json", config_json.dump(2) + "\n"));
  for (const char* name : {"tokenizer.model", "tokenizer.json", "tokenizer_config.json",
                           "special_tokens_map.json", "generation_config.json"}) {
    struct stat st {};
    if (::stat((in_dir + "/" + name).c_str(), &st) == 0) {
      MOE_RETURN_IF_ERROR(CopyFile(in_dir + "/" + name, out_dir + "/" + name));
    }
  }
  return absl::OkStatus();
}

}  // namespace moe
