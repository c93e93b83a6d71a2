#include "coordinator/server/server_security.h"

#include <cctype>
#include <fstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "grpcpp/security/auth_context.h"

namespace moe {
namespace {

constexpr char kBeginCertificate[] = "-----BEGIN CERTIFICATE-----";
constexpr char kEndCertificate[] = "-----END CERTIFICATE-----";
constexpr size_t kMinAdminTokenLength = 16;
constexpr int64_t kMaxFileBytes = 1
                                  << 20;  // PEM bundles are kilobytes; anything larger is a mistake

absl::StatusOr<std::string> ReadSmallFile(const std::string& flag, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InvalidArgumentError(absl::StrCat(flag, ": cannot read ", path));
  std::string text;
  text.reserve(4096);
  char c;
  while (in.get(c)) {
    if (static_cast<int64_t>(text.size()) >= kMaxFileBytes) {
      return absl::InvalidArgumentError(absl::StrCat(flag, ": ", path, " is larger than 1 MiB"));
    }
    text.push_back(c);
  }
  return text;
}

}  // namespace

absl::StatusOr<std::string> ReadTokenFile(const std::string& flag, const std::string& path) {
  absl::StatusOr<std::string> text = ReadSmallFile(flag, path);
  if (!text.ok()) return text.status();
  const std::string token(absl::StripAsciiWhitespace(text->substr(0, text->find('\n'))));
  if (token.size() < kMinAdminTokenLength) {
    return absl::InvalidArgumentError(absl::StrCat(flag, ": the token on the first line of ", path,
                                                   " must be at least ", kMinAdminTokenLength, " characters"));
  }
  for (char c : token) {
    if (!std::isgraph(static_cast<unsigned char>(c))) {
      return absl::InvalidArgumentError(absl::StrCat(
          flag, ": the token must be printable ASCII without spaces (it travels in a header)"));
    }
  }
  return token;
}

std::string ServerSecurity::LeafCertificatePem() const {
  const size_t begin = certificate_chain_pem.find(kBeginCertificate);
  if (begin == std::string::npos) return "";
  const size_t end = certificate_chain_pem.find(kEndCertificate, begin);
  if (end == std::string::npos) return "";
  return absl::StrCat(
      certificate_chain_pem.substr(begin, end + sizeof(kEndCertificate) - 1 - begin), "\n");
}

absl::StatusOr<ServerSecurity> ServerSecurity::FromFiles(const std::string& cert_file,
                                                         const std::string& key_file,
                                                         const std::string& client_ca_file,
                                                         const std::string& admin_token_file) {
  ServerSecurity s;
  if (cert_file.empty() != key_file.empty()) {
    return absl::InvalidArgumentError("--tls-cert and --tls-key go together: give both or neither");
  }
  if (!client_ca_file.empty() && cert_file.empty()) {
    return absl::InvalidArgumentError(
        "--tls-client-ca needs TLS: give --tls-cert and --tls-key too");
  }
  if (!cert_file.empty()) {
    absl::StatusOr<std::string> cert = ReadSmallFile("--tls-cert", cert_file);
    if (!cert.ok()) return cert.status();
    s.certificate_chain_pem = *std::move(cert);
    if (s.LeafCertificatePem().empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--tls-cert: ", cert_file, " holds no PEM certificate (", kBeginCertificate, ")"));
    }
    absl::StatusOr<std::string> key = ReadSmallFile("--tls-key", key_file);
    if (!key.ok()) return key.status();
    s.private_key_pem = *std::move(key);
    if (!absl::StrContains(s.private_key_pem, "-----BEGIN ") ||
        !absl::StrContains(s.private_key_pem, "PRIVATE KEY-----")) {
      return absl::InvalidArgumentError(
          absl::StrCat("--tls-key: ", key_file, " holds no PEM private key"));
    }
  }
  if (!client_ca_file.empty()) {
    absl::StatusOr<std::string> ca = ReadSmallFile("--tls-client-ca", client_ca_file);
    if (!ca.ok()) return ca.status();
    s.client_ca_pem = *std::move(ca);
    if (!absl::StrContains(s.client_ca_pem, kBeginCertificate)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--tls-client-ca: ", client_ca_file, " holds no PEM certificate"));
    }
  }
  if (!admin_token_file.empty()) {
    absl::StatusOr<std::string> token = ReadTokenFile("--admin-token-file", admin_token_file);
    if (!token.ok()) return token.status();
    s.admin_token = *std::move(token);
  }
  return s;
}

std::shared_ptr<grpc::ServerCredentials> MakeServerCredentials(const ServerSecurity& security) {
  if (!security.tls()) return grpc::InsecureServerCredentials();
  grpc::SslServerCredentialsOptions options(
      security.client_ca_pem.empty() ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                                     // Requested, verified when presented, but not required by
                                     // the handshake: workers have no certificate, and the
                                     // user-facing calls refuse an unauthenticated peer.
                                     : GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY);
  options.pem_root_certs = security.client_ca_pem;
  options.pem_key_cert_pairs.push_back({security.private_key_pem, security.certificate_chain_pem});
  return grpc::SslServerCredentials(options);
}

bool IsLoopbackAddress(const std::string& host_port) {
  const size_t colon = host_port.rfind(':');
  std::string host = absl::AsciiStrToLower(
      host_port.substr(0, colon == std::string::npos ? host_port.size() : colon));
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  return host == "localhost" || host == "::1" || absl::StartsWith(host, "127.");
}

bool ConstantTimeEquals(absl::string_view expected, absl::string_view presented) {
  if (presented.size() != expected.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < expected.size(); ++i) {
    diff |= static_cast<unsigned char>(expected[i] ^ presented[i]);
  }
  return diff == 0;
}

absl::string_view BearerCredentials(absl::string_view authorization) {
  constexpr absl::string_view kScheme = "bearer";
  if (authorization.size() <= kScheme.size() ||
      !absl::EqualsIgnoreCase(authorization.substr(0, kScheme.size()), kScheme) ||
      authorization[kScheme.size()] != ' ') {
    return {};
  }
  authorization.remove_prefix(kScheme.size());
  while (!authorization.empty() && authorization.front() == ' ') authorization.remove_prefix(1);
  return authorization;
}

CallAuthorizer::CallAuthorizer(const ServerSecurity& security, bool loopback)
    : require_client_certificate_(!security.client_ca_pem.empty()),
      admin_token_(security.admin_token),
      admin_without_token_(loopback) {}

grpc::Status CallAuthorizer::Check(const grpc::ServerContext& context, CallRole role) const {
  if (require_client_certificate_) {
    const std::shared_ptr<const grpc::AuthContext> auth = context.auth_context();
    if (auth == nullptr || !auth->IsPeerAuthenticated()) {
      return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                          "this server requires a client certificate signed by its --tls-client-ca "
                          "(mutual TLS)");
    }
  }
  if (role != CallRole::kAdmin) return grpc::Status::OK;
  if (admin_token_.empty()) {
    if (admin_without_token_) return grpc::Status::OK;
    return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                        "administrative calls (ResetLoad, Rebalance) are refused: the server "
                        "listens beyond loopback and has no --admin-token-file");
  }
  const auto& metadata = context.client_metadata();
  const auto presented = metadata.find(kAuthorizationHeader);
  if (presented == metadata.end()) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "administrative calls need the server's admin token as the metadata "
                        "'authorization: Bearer TOKEN' (moe-cli --admin-token-file)");
  }
  const absl::string_view credentials = BearerCredentials(
      absl::string_view(presented->second.data(), presented->second.size()));
  if (credentials.empty() || !ConstantTimeEquals(admin_token_, credentials)) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "the admin token presented is not the server's");
  }
  return grpc::Status::OK;
}

}  // namespace moe
