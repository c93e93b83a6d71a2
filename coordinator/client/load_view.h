// The terminal table of `moe-cli load`: per-layer expert shares with imbalance and locality, then
// per-worker load and health, from one LoadSnapshot.
#pragma once

#include <string>

#include "moe/v1/telemetry.pb.h"

namespace moe {

struct LoadViewOptions {
  bool window = false;  // the sliding-window counts instead of the totals since reset
  // Columns to fit. Tables wider than this split (expert shares apart from the per-layer
  // figures, experts and workers in groups); prose wraps. Wider terminals get one wide table.
  int width = 80;
};

// The placement section alone: epoch, the latest re-placement, each worker's experts per layer
// (replicas marked *), workers in groups that fit `width`.
std::string RenderPlacement(const moe::v1::PlacementInfo& placement, int n_workers, int n_experts, int width = 80);

std::string RenderLoadView(const moe::v1::LoadSnapshot& snapshot, const LoadViewOptions& options);

}  // namespace moe
