#include "worker/pinned_credentials.h"

#include <cctype>

#include "grpcpp/security/tls_certificate_verifier.h"
#include "grpcpp/security/tls_credentials_options.h"

namespace moe {
namespace {

constexpr absl::string_view kBegin = "-----BEGIN CERTIFICATE-----";
constexpr absl::string_view kEnd = "-----END CERTIFICATE-----";

// The base64 body of the first certificate, without whitespace; empty when there is none.
std::string CertificateBody(absl::string_view pem) {
  const size_t begin = pem.find(kBegin);
  if (begin == absl::string_view::npos) return "";
  const size_t end = pem.find(kEnd, begin);
  if (end == absl::string_view::npos) return "";
  std::string body;
  for (char c : pem.substr(begin + kBegin.size(), end - begin - kBegin.size())) {
    if (!std::isspace(static_cast<unsigned char>(c))) body.push_back(c);
  }
  return body;
}

// Accepts the handshake only when the server presents the pinned certificate. gRPC calls it
// after the TLS library has checked that the server holds the certificate's private key.
class PinnedCertificateVerifier : public grpc::experimental::ExternalCertificateVerifier {
 public:
  explicit PinnedCertificateVerifier(std::string certificate_pem)
      : pinned_(std::move(certificate_pem)) {}

  bool Verify(grpc::experimental::TlsCustomVerificationCheckRequest* request,
              std::function<void(grpc::Status)>, grpc::Status* sync_status) override {
    const grpc::string_ref presented = request->peer_cert();
    *sync_status = SameCertificate(pinned_, absl::string_view(presented.data(), presented.size()))
                       ? grpc::Status::OK
                       : grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                                      "the server's certificate is not the coordinator's");
    return true;  // decided synchronously
  }
  void Cancel(grpc::experimental::TlsCustomVerificationCheckRequest*) override {}

 private:
  const std::string pinned_;
};

}  // namespace

bool SameCertificate(absl::string_view a_pem, absl::string_view b_pem) {
  const std::string a = CertificateBody(a_pem);
  return !a.empty() && a == CertificateBody(b_pem);
}

std::shared_ptr<grpc::ChannelCredentials> WorkerChannelCredentials(
    const std::string& certificate_pem) {
  if (certificate_pem.empty()) return grpc::InsecureChannelCredentials();
  grpc::experimental::TlsChannelCredentialsOptions options;
  // The pin replaces the CA chain and the host name check.
  options.set_verify_server_certs(false);
  options.set_check_call_host(false);
  options.set_certificate_verifier(
      grpc::experimental::ExternalCertificateVerifier::Create<PinnedCertificateVerifier>(
          certificate_pem));
  return grpc::experimental::TlsCredentials(options);
}

}  // namespace moe
