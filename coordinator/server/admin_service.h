// AdminService: the gRPC face of what changes the cluster for every user (moe.v1.Admin:
// Rebalance, the live expert re-placement). It only translates: protobuf in and out here, the
// Rebalancer's plain structs below.
#pragma once

#include "coordinator/engine/rebalancer.h"
#include "coordinator/server/server_security.h"
#include "moe/v1/admin.grpc.pb.h"

namespace moe {

class AdminService final : public moe::v1::Admin::Service {
 public:
  // rebalancer: not owned; null: Rebalance answers UNAVAILABLE (a server that cannot re-place).
  // authorizer: who may administer; the default lets all.
  explicit AdminService(Rebalancer* rebalancer, CallAuthorizer authorizer = {})
      : rebalancer_(rebalancer), authorizer_(std::move(authorizer)) {}

  grpc::Status Rebalance(grpc::ServerContext* context, const moe::v1::RebalanceRequest* request,
                         moe::v1::RebalanceResponse* response) override;

 private:
  Rebalancer* rebalancer_;
  const CallAuthorizer authorizer_;
};

}  // namespace moe
