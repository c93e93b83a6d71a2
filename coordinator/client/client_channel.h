// The client side of the port's security (coordinator/server/server_security.h): a channel that
// speaks TLS when asked (server verified against a CA, optional client certificate for mutual
// TLS) and the administrative token on the calls that need it.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "grpcpp/grpcpp.h"

namespace moe {

struct ClientSecurity {
  bool tls = false;      // --tls, or implied by --tls-ca
  std::string ca_pem;    // --tls-ca: roots that sign the server's certificate; empty: the system's
  std::string cert_pem;  // --tls-cert: this client's certificate (mutual TLS); empty: none
  std::string key_pem;   // --tls-key: its private key
  std::string server_name;  // --tls-server-name: the name to expect in the server's certificate
  std::string admin_token;  // --admin-token-file's first line; empty: none

  // Reads the files (empty paths: not given); the error names the flag.
  static absl::StatusOr<ClientSecurity> FromFlags(bool tls, const std::string& ca_file,
                                                  const std::string& cert_file,
                                                  const std::string& key_file,
                                                  const std::string& server_name,
                                                  const std::string& admin_token_file);
};

// A channel to HOST:PORT, never through $http_proxy (loopback included).
std::shared_ptr<grpc::Channel> MakeClientChannel(const std::string& server,
                                                 const ClientSecurity& security);

// Adds "authorization: Bearer TOKEN" to an administrative call, when there is a token.
void AddAdminToken(const ClientSecurity& security, grpc::ClientContext* context);

}  // namespace moe
