// Channel credentials for the worker's report stream: TLS that trusts exactly one server
// certificate, the one the coordinator sent through MPI (certificate pinning). No CA, no host
// name: the coordinator may be reached under any address, and only the holder of that
// certificate's private key can answer.
#pragma once

#include <memory>
#include <string>

#include "absl/strings/string_view.h"
#include "grpcpp/security/credentials.h"

namespace moe {

// TLS pinned to `certificate_pem` when it is set; insecure credentials when it is empty (the
// coordinator serves plaintext).
std::shared_ptr<grpc::ChannelCredentials> WorkerChannelCredentials(
    const std::string& certificate_pem);

// Whether two PEM texts hold the same first certificate (its base64 body, line breaks and
// surrounding text ignored).
bool SameCertificate(absl::string_view a_pem, absl::string_view b_pem);

}  // namespace moe
