#include "worker/expert_reloader.h"

#include <cstdio>

#include "absl/strings/str_cat.h"
#include "core/model/model_weights.h"

namespace moe {

ExpertReloader::~ExpertReloader() {
  Join();
  host_->DropStaged();
}

void ExpertReloader::Join() {
  if (loader_.joinable()) loader_.join();
}

absl::Status ExpertReloader::Begin(ExpertPlacement next, uint32_t epoch) {
  if (next_ != nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("re-placement to epoch ", epoch_, " is still loading here"));
  }
  Join();
  next_ = std::make_unique<ExpertPlacement>(std::move(next));
  epoch_ = epoch;
  {
    absl::MutexLock lock(&mu_);
    state_ = PlacementState::kLoading;
    error_ = absl::OkStatus();
    experts_loaded_ = 0;
    started_ = std::chrono::steady_clock::now();
    seconds_ = 0;
  }
  loader_ = std::thread([this] { Load(); });
  return absl::OkStatus();
}

void ExpertReloader::Load() {
  // Packing runs on this thread alone: the CPU threads stay with the serving loop.
  kernels::UseCallingThreadOnly();
  const ExpertPlacement& next = *next_;
  LoadOptions options;
  options.attention_side = false;
  int adding = 0;
  for (int l = 0; l < next.n_layers(); ++l) {
    for (int e = 0; e < next.n_experts(); ++e)
      adding += next.Owns(rank_, l, e) && !host_->Loaded(l, e);
  }
  options.owns_expert = [&](int l, int e) {
    return next.Owns(rank_, l, e) && !host_->Loaded(l, e);
  };
  absl::Status status;
  if (adding > 0) {
    absl::StatusOr<std::unique_ptr<ModelWeights>> source = LoadModelWeights(model_dir_, options);
    status = source.ok() ? host_->Stage(*std::move(source)) : source.status();
  }
  absl::MutexLock lock(&mu_);
  seconds_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
  if (status.ok()) {
    state_ = PlacementState::kReady;
    experts_loaded_ = adding;
  } else {
    state_ = PlacementState::kFailed;
    error_ = status;
  }
}

PlacementReply ExpertReloader::Progress() {
  absl::MutexLock lock(&mu_);
  PlacementReply reply;
  reply.state = static_cast<int32_t>(state_);
  reply.placement_epoch = epoch_;
  reply.experts_loaded = experts_loaded_;
  reply.load_seconds =
      state_ == PlacementState::kLoading
          ? std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count()
          : seconds_;
  std::snprintf(reply.error, sizeof(reply.error), "%s", std::string(error_.message()).c_str());
  return reply;
}

absl::StatusOr<const ExpertPlacement*> ExpertReloader::Commit() {
  {
    absl::MutexLock lock(&mu_);
    if (next_ == nullptr || state_ != PlacementState::kReady) {
      return absl::FailedPreconditionError("the new experts are not loaded");
    }
    state_ = PlacementState::kIdle;
  }
  Join();
  const ExpertPlacement* next = next_.get();
  host_->Switch(next, [&](int l, int e) { return next->Owns(rank_, l, e); });
  current_ = std::move(next_);
  return current_.get();
}

void ExpertReloader::Abort() {
  Join();
  host_->DropStaged();
  next_.reset();
  absl::MutexLock lock(&mu_);
  state_ = PlacementState::kIdle;
}

}  // namespace moe
