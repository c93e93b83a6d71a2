#include "core/mpi/cluster_setup.h"

#include <mpi.h>

#include <cstdio>
#include <cstring>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/mpi/mpi_wait.h"

namespace moe {

absl::StatusOr<ExpertPlacement> SharePlacement(const absl::StatusOr<ExpertPlacement>* at_root) {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  // Wire form: [1, n_layers, n_experts, n_workers, then per layer: n_slots, (rank, expert) per
  // slot] or [0, message length, message...].
  std::vector<int32_t> wire;
  if (rank == 0) {
    if (at_root->ok()) {
      const ExpertPlacement& p = **at_root;
      wire = {1, p.n_layers(), p.n_experts(), p.n_workers()};
      for (int l = 0; l < p.n_layers(); ++l) {
        wire.push_back(p.n_slots(l));
        for (const ExpertSlot& slot : p.slots(l)) wire.insert(wire.end(), {slot.rank, slot.expert});
      }
    } else {
      const std::string msg(at_root->status().message());
      wire = {0, static_cast<int32_t>(msg.size())};
      for (char c : msg) wire.push_back(c);
    }
  }
  int32_t size = static_cast<int32_t>(wire.size());
  MPI_Bcast(&size, 1, MPI_INT32_T, 0, MPI_COMM_WORLD);
  wire.resize(static_cast<size_t>(size));
  MPI_Bcast(wire.data(), size, MPI_INT32_T, 0, MPI_COMM_WORLD);
  if (wire[0] == 0) {
    std::string msg;
    for (int i = 0; i < wire[1]; ++i) msg.push_back(static_cast<char>(wire[2 + i]));
    return absl::FailedPreconditionError(absl::StrCat("the coordinator could not start: ", msg));
  }
  const int n_layers = wire[1], n_experts = wire[2], n_workers = wire[3];
  std::vector<std::vector<ExpertSlot>> slots(static_cast<size_t>(n_layers));
  size_t at = 4;
  for (int l = 0; l < n_layers; ++l) {
    const int n_slots = wire[at++];
    for (int s = 0; s < n_slots; ++s, at += 2) slots[l].push_back({wire[at], wire[at + 1]});
  }
  return ExpertPlacement::FromSlots(std::move(slots), n_experts, n_workers);
}

RankReport ReportLoad(int rank, int experts_hosted,
                      const absl::StatusOr<std::unique_ptr<ModelWeights>>& weights,
                      double load_seconds, kernels::MatMulNumerics cpu_numerics) {
  RankReport r;
  r.rank = rank;
  r.cpu_numerics = static_cast<int32_t>(cpu_numerics);
  r.experts_hosted = experts_hosted;
  if (weights.ok()) {
    const ModelWeights& w = **weights;
    r.mapped_bytes = w.mapped_bytes;
    r.experts_dtype = static_cast<int32_t>(w.expert_dtype);
    r.held_bytes = HeldBytes(w);
    std::snprintf(r.weights, sizeof(r.weights), "%s", DescribeHeldWeights(w).c_str());
  } else {
    r.ok = 0;
    std::snprintf(r.error, sizeof(r.error), "%s", std::string(weights.status().message()).c_str());
  }
  r.resident_bytes = ResidentBytes();
  r.load_seconds = load_seconds;
  return r;
}

absl::Status CheckRankReports(const std::vector<RankReport>& reports) {
  auto who = [](int rank) {
    return rank == 0 ? std::string("coordinator") : absl::StrCat("worker rank ", rank);
  };
  for (const RankReport& r : reports) {
    if (!r.ok) return absl::FailedPreconditionError(absl::StrCat(who(r.rank), ": ", r.error));
  }
  auto name = [](int32_t numerics) {
    return numerics == static_cast<int32_t>(kernels::MatMulNumerics::kFloat32) ? "f32" : "fast";
  };
  for (const RankReport& r : reports) {
    if (r.cpu_numerics != reports.front().cpu_numerics) {
      return absl::InvalidArgumentError(
          absl::StrCat(who(r.rank), " runs --cpu-numerics ", name(r.cpu_numerics),
                       ", the coordinator ", name(reports.front().cpu_numerics),
                       ": give every rank the same (scripts/launch.sh "
                       "--cpu-numerics does)"));
    }
  }
  for (const RankReport& r : reports) {
    // Every rank must hold experts alike: a moved expert is held as its new host holds them,
    // and the cluster's logits equal the single process's only at one format.
    if (r.experts_dtype != reports.front().experts_dtype) {
      auto held = [](int32_t d) { return DTypeName(static_cast<DType>(d)); };
      return absl::InvalidArgumentError(absl::StrCat(
          who(r.rank), " holds the experts as ", held(r.experts_dtype), ", the coordinator as ",
          held(reports.front().experts_dtype),
          ": give every rank the same --quantize (scripts/launch.sh --quantize does)"));
    }
  }
  return absl::OkStatus();
}

std::vector<RankReport> GatherRankReports(const RankReport& mine) {
  int rank = 0, size = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  std::vector<RankReport> all(rank == 0 ? static_cast<size_t>(size) : 0);
  MPI_Gather(&mine, sizeof(RankReport), MPI_BYTE, all.data(), sizeof(RankReport), MPI_BYTE, 0,
             MPI_COMM_WORLD);
  return all;
}

std::string FormatRankReports(const std::vector<RankReport>& reports) {
  std::string out =
      "  rank  role         experts  weights mapped  weights held  resident (RSS)  start-up"
      "  held as\n";
  for (const RankReport& r : reports) {
    absl::StrAppendFormat(&out,
                          "  %4d  %-11s  %7d  %11.1f MB  %9.1f MB  %11.1f MB  %7.2f s  %s%s\n",
                          r.rank, r.rank == 0 ? "coordinator" : "worker", r.experts_hosted,
                          r.mapped_bytes / 1e6, r.held_bytes / 1e6, r.resident_bytes / 1e6,
                          r.load_seconds, r.weights, r.ok ? "" : "  FAILED");
  }
  return out;
}

TelemetryEndpoint ShareTelemetryEndpoint(const TelemetryEndpoint& at_root) {
  struct Wire {
    char address[256];
    char token[40];
    int32_t interval_ms;
    int32_t certificate_bytes;  // the PEM that follows in a second broadcast
  } wire{};
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  std::string certificate;
  if (rank == 0) {
    std::snprintf(wire.address, sizeof(wire.address), "%s", at_root.address.c_str());
    std::snprintf(wire.token, sizeof(wire.token), "%s", at_root.token.c_str());
    wire.interval_ms = at_root.interval_ms;
    certificate = at_root.server_certificate;
    wire.certificate_bytes = static_cast<int32_t>(certificate.size());
  }
  std::vector<MPI_Request> request(1);
  MPI_Ibcast(&wire, sizeof(wire), MPI_BYTE, 0, MPI_COMM_WORLD, &request[0]);
  WaitAll(&request, {0}, 0, "telemetry endpoint").IgnoreError();  // no deadline: cannot fail
  if (wire.certificate_bytes > 0) {
    certificate.resize(static_cast<size_t>(wire.certificate_bytes));
    request.assign(1, MPI_REQUEST_NULL);
    MPI_Ibcast(certificate.data(), wire.certificate_bytes, MPI_BYTE, 0, MPI_COMM_WORLD,
               &request[0]);
    WaitAll(&request, {0}, 0, "telemetry endpoint").IgnoreError();
  }
  wire.address[sizeof(wire.address) - 1] = '\0';
  wire.token[sizeof(wire.token) - 1] = '\0';
  return TelemetryEndpoint{wire.address, wire.interval_ms, wire.token, certificate};
}

std::string NewTelemetryToken() {
  std::random_device random;  // the OS's entropy
  std::string token;
  for (int i = 0; i < 4; ++i) absl::StrAppendFormat(&token, "%08x", random());
  return token;
}

}  // namespace moe
