// Who may call the coordinator's gRPC port, and over what: TLS (the server's certificate, client
// certificates for mutual TLS), the administrative credential, and the check each call makes.
//
// The port carries three kinds of calls. Users: moe.v1.Inference and the read side of
// moe.v1.Telemetry (GetLoad, WatchLoad). Administrators: ResetLoad and Rebalance, which change
// what every user sees. Workers: moe.v1.WorkerTelemetry, authenticated by the cluster's token
// (core/mpi/cluster_setup.h), never by this class. Zero configuration (loopback, no flags) serves
// plaintext and lets any local caller administer.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server_context.h"

namespace moe {

struct ServerSecurity {
  // --tls-cert: PEM certificate chain, the server's own certificate first; empty: plaintext.
  std::string certificate_chain_pem;
  // --tls-key: the PEM private key of that certificate.
  std::string private_key_pem;
  // --tls-client-ca: PEM certificates; when set, user and administrative calls need a client
  // certificate signed by one of them (mutual TLS). Workers present their token instead.
  std::string client_ca_pem;
  // --admin-token-file's first line; when set, ResetLoad and Rebalance need the metadata
  // "authorization: Bearer <token>". At least 16 characters.
  std::string admin_token;

  bool tls() const { return !certificate_chain_pem.empty(); }
  // The first certificate of the chain, PEM: the one the server presents, which workers pin.
  std::string LeafCertificatePem() const;

  // Reads the files named by the flags (an empty path: not given). Both or neither of cert and
  // key; a client CA needs TLS; each file must hold what its flag says (PEM blocks of the right
  // kind, a token of 16+ printable characters). The error names the flag.
  static absl::StatusOr<ServerSecurity> FromFiles(const std::string& cert_file,
                                                  const std::string& key_file,
                                                  const std::string& client_ca_file,
                                                  const std::string& admin_token_file);
};

// A secret's file (--admin-token-file, --http-api-key-file): its first line, stripped, at least 16
// printable characters without spaces. The error names the flag.
absl::StatusOr<std::string> ReadTokenFile(const std::string& flag, const std::string& path);

// TLS server credentials when security.tls() (client certificates requested and verified against
// client_ca_pem when it is set), else insecure ones.
std::shared_ptr<grpc::ServerCredentials> MakeServerCredentials(const ServerSecurity& security);

// True when HOST:PORT can only be reached from this machine: 127.0.0.0/8, [::1], localhost.
bool IsLoopbackAddress(const std::string& host_port);

// Compares secrets in time that depends on the lengths only, so that timing does not reveal how
// much of a guess was right.
bool ConstantTimeEquals(absl::string_view expected, absl::string_view presented);

// The credentials of an "Authorization: Bearer TOKEN" value: the scheme is case-insensitive and
// may be followed by several spaces (RFC 7235). Empty when the value is not of that form.
absl::string_view BearerCredentials(absl::string_view authorization);

// What a call does, for CallAuthorizer.
enum class CallRole {
  kUser,   // generate, tokenize, read the telemetry
  kAdmin,  // reset the load counters, re-place experts
};

// Decides per call whether the caller may make it. Immutable, so thread-safe.
class CallAuthorizer {
 public:
  // Lets every call through (tests, in-process use).
  CallAuthorizer() = default;
  // loopback: the server listens on loopback only (IsLoopbackAddress). Without an admin token,
  // administrative calls are then allowed (zero configuration on one machine) and refused
  // otherwise.
  CallAuthorizer(const ServerSecurity& security, bool loopback);

  // OK, or UNAUTHENTICATED (no or wrong client certificate or token: the message says what is
  // needed) or PERMISSION_DENIED (administration is not offered on this address).
  grpc::Status Check(const grpc::ServerContext& context, CallRole role) const;

 private:
  bool require_client_certificate_ = false;
  std::string admin_token_;
  bool admin_without_token_ = true;
};

// The metadata key administrative calls carry their token in, as "Bearer <token>".
inline constexpr char kAuthorizationHeader[] = "authorization";

}  // namespace moe
