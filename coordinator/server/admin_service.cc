#include "coordinator/server/admin_service.h"

#include <chrono>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "coordinator/server/telemetry_proto.h"

namespace moe {
namespace {

grpc::StatusCode ToGrpcCode(absl::StatusCode code) { return static_cast<grpc::StatusCode>(code); }

}  // namespace

grpc::Status AdminService::Rebalance(grpc::ServerContext* context,
                                     const moe::v1::RebalanceRequest* request,
                                     moe::v1::RebalanceResponse* response) {
  if (grpc::Status denied = authorizer_.Check(*context, CallRole::kAdmin); !denied.ok())
    return denied;
  if (rebalancer_ == nullptr) {
    return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                        "this server cannot change its expert placement");
  }
  RebalanceOutcome outcome;
  if (request->dry_run()) {
    absl::StatusOr<RebalancePlan> plan = rebalancer_->Plan(request->force());
    if (!plan.ok())
      return grpc::Status(ToGrpcCode(plan.status().code()), std::string(plan.status().message()));
    outcome.plan = *std::move(plan);
  } else {
    // The client's deadline, or a generous default: loading 8x7B experts from disk takes a while.
    const absl::Time deadline = context->deadline() == std::chrono::system_clock::time_point::max()
                                    ? absl::Now() + absl::Minutes(10)
                                    : absl::FromChrono(context->deadline());
    absl::StatusOr<RebalanceOutcome> done = rebalancer_->Request(request->force(), deadline);
    if (!done.ok())
      return grpc::Status(ToGrpcCode(done.status().code()), std::string(done.status().message()));
    outcome = *std::move(done);
  }
  const RebalancePlan& plan = outcome.plan;
  response->set_applied(outcome.applied);
  response->set_skipped(plan.skipped);
  response->set_placement_epoch(rebalancer_->placements().epoch());
  response->set_balancedness_before(plan.balancedness_before);
  response->set_predicted_balancedness(plan.predicted_balancedness);
  response->set_moved_slots(plan.moved_slots);
  response->set_moved_experts(plan.moved_experts);
  response->set_replicas(plan.replicas);
  if (plan.placement != nullptr) {
    for (int l = 0; l < plan.placement->n_layers(); ++l) {
      SlotsToProto(plan.placement->slots(l), response->add_plan());
    }
    response->set_plan_json(plan.placement->ToJson());
  }
  if (outcome.applied) RearrangementToProto(outcome.record, response->mutable_rearrangement());
  return grpc::Status::OK;
}

}  // namespace moe
