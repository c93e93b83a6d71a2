#include "coordinator/client/client_channel.h"

#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace moe {
namespace {

absl::StatusOr<std::string> ReadFile(const char* flag, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InvalidArgumentError(absl::StrCat(flag, ": cannot read ", path));
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

absl::StatusOr<ClientSecurity> ClientSecurity::FromFlags(bool tls, const std::string& ca_file,
                                                         const std::string& cert_file,
                                                         const std::string& key_file,
                                                         const std::string& server_name,
                                                         const std::string& admin_token_file) {
  ClientSecurity s;
  s.tls = tls || !ca_file.empty() || !cert_file.empty();
  s.server_name = server_name;
  if (cert_file.empty() != key_file.empty()) {
    return absl::InvalidArgumentError("--tls-cert and --tls-key go together: give both or neither");
  }
  struct File {
    const char* flag;
    const std::string& path;
    std::string* into;
  };
  for (const File& f :
       {File{"--tls-ca", ca_file, &s.ca_pem}, File{"--tls-cert", cert_file, &s.cert_pem},
        File{"--tls-key", key_file, &s.key_pem}}) {
    if (f.path.empty()) continue;
    absl::StatusOr<std::string> text = ReadFile(f.flag, f.path);
    if (!text.ok()) return text.status();
    *f.into = *std::move(text);
  }
  if (!admin_token_file.empty()) {
    absl::StatusOr<std::string> text = ReadFile("--admin-token-file", admin_token_file);
    if (!text.ok()) return text.status();
    s.admin_token = std::string(absl::StripAsciiWhitespace(text->substr(0, text->find('\n'))));
  }
  return s;
}

std::shared_ptr<grpc::Channel> MakeClientChannel(const std::string& server,
                                                 const ClientSecurity& security) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_ENABLE_HTTP_PROXY, 0);  // loopback must not go through $http_proxy
  if (!security.tls)
    return grpc::CreateCustomChannel(server, grpc::InsecureChannelCredentials(), args);
  grpc::SslCredentialsOptions tls;
  tls.pem_root_certs = security.ca_pem;  // empty: gRPC's default roots
  tls.pem_cert_chain = security.cert_pem;
  tls.pem_private_key = security.key_pem;
  if (!security.server_name.empty()) args.SetSslTargetNameOverride(security.server_name);
  return grpc::CreateCustomChannel(server, grpc::SslCredentials(tls), args);
}

void AddAdminToken(const ClientSecurity& security, grpc::ClientContext* context) {
  if (!security.admin_token.empty())
    context->AddMetadata("authorization", "Bearer " + security.admin_token);
}

}  // namespace moe
