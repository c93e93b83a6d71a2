// The port's security: the flags' files, the per-call policy (users, administrators, mutual TLS)
// through a real gRPC server on loopback, and the workers' pinned TLS channel.
#include "coordinator/server/server_security.h"

#include <fstream>
#include <memory>

#include "coordinator/server/admin_service.h"
#include "coordinator/server/telemetry_service.h"
#include "coordinator/telemetry/load_aggregator.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/coordinator/server/test_certificates.h"
#include "worker/pinned_credentials.h"

namespace moe {
namespace {

using testing::TestCertificates;

std::string WriteFile(const std::string& name, const std::string& text) {
  const std::string path = ::testing::TempDir() + "/" + name;
  std::ofstream(path) << text;
  return path;
}

constexpr char kToken[] = "0123456789abcdef0123";

TEST(ServerSecurityTest, FromFilesSaysWhichFlagIsWrong) {
  const std::string cert =
      WriteFile("cert.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
  const std::string key =
      WriteFile("key.pem", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n");
  const std::string junk = WriteFile("junk.txt", "not a pem\n");
  auto error = [](const absl::StatusOr<ServerSecurity>& s) {
    return std::string(s.status().message());
  };
  EXPECT_TRUE(ServerSecurity::FromFiles("", "", "", "").ok());
  EXPECT_FALSE(ServerSecurity::FromFiles("", "", "", "")->tls());
  EXPECT_EQ(error(ServerSecurity::FromFiles(cert, "", "", "")),
            "--tls-cert and --tls-key go together: give both or neither");
  EXPECT_EQ(error(ServerSecurity::FromFiles("", "", cert, "")),
            "--tls-client-ca needs TLS: give --tls-cert and --tls-key too");
  EXPECT_NE(error(ServerSecurity::FromFiles(junk, key, "", "")).find("--tls-cert: "),
            std::string::npos);
  EXPECT_NE(error(ServerSecurity::FromFiles(cert, junk, "", "")).find("--tls-key: "),
            std::string::npos);
  EXPECT_NE(error(ServerSecurity::FromFiles(cert, key, junk, "")).find("--tls-client-ca: "),
            std::string::npos);
  EXPECT_NE(error(ServerSecurity::FromFiles("/nonexistent/c.pem", key, "", ""))
                .find("cannot read /nonexistent/c.pem"),
            std::string::npos);
  EXPECT_NE(
      error(ServerSecurity::FromFiles("", "", "", WriteFile("short", "abc\n"))).find("at least 16"),
      std::string::npos);
  EXPECT_NE(
      error(ServerSecurity::FromFiles("", "", "", WriteFile("spaced", "0123456789 abcdef01\n")))
          .find("printable ASCII without spaces"),
      std::string::npos);
  absl::StatusOr<ServerSecurity> ok = ServerSecurity::FromFiles(
      cert, key, cert, WriteFile("token", std::string("  ") + kToken + "\nsecond line\n"));
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_TRUE(ok->tls());
  EXPECT_EQ(ok->admin_token, kToken);
}

TEST(ServerSecurityTest, LeafCertificateIsTheFirstOfTheChain) {
  ServerSecurity s;
  s.certificate_chain_pem =
      "junk\n-----BEGIN CERTIFICATE-----\nLEAF\n-----END CERTIFICATE-----\n"
      "-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n";
  EXPECT_EQ(s.LeafCertificatePem(),
            "-----BEGIN CERTIFICATE-----\nLEAF\n-----END CERTIFICATE-----\n");
}

TEST(ServerSecurityTest, LoopbackAddresses) {
  for (const char* a :
       {"127.0.0.1:50051", "127.1.2.3:0", "localhost:1", "LOCALHOST:1", "[::1]:50051"}) {
    EXPECT_TRUE(IsLoopbackAddress(a)) << a;
  }
  for (const char* a :
       {"0.0.0.0:50051", "[::]:1", "10.0.0.7:1", "example.com:1", "128.0.0.1:1", ":50051"}) {
    EXPECT_FALSE(IsLoopbackAddress(a)) << a;
  }
}

TEST(ServerSecurityTest, ConstantTimeEquals) {
  EXPECT_TRUE(ConstantTimeEquals("secret", "secret"));
  EXPECT_FALSE(ConstantTimeEquals("secret", "secreT"));
  EXPECT_FALSE(ConstantTimeEquals("secret", "secret2"));
  EXPECT_FALSE(ConstantTimeEquals("secret", ""));
  EXPECT_TRUE(ConstantTimeEquals("", ""));
}

// The telemetry and admin services on an ephemeral loopback port, secured as Serve secures it;
// `loopback` is what the policy believes of the listen address.
struct TestServer {
  LoadAggregator aggregator{[] {
    LoadAggregatorOptions o;
    o.n_layers = 1;
    o.n_experts = 2;
    o.top_k = 1;
    return o;
  }()};
  std::unique_ptr<TelemetryService> service;
  std::unique_ptr<AdminService> admin;
  std::unique_ptr<grpc::Server> server;
  int port = 0;

  TestServer(const ServerSecurity& security, bool loopback) {
    service = std::make_unique<TelemetryService>(&aggregator, nullptr, WatchLimits{},
                                                 CallAuthorizer(security, loopback));
    admin = std::make_unique<AdminService>(nullptr, CallAuthorizer(security, loopback));
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", MakeServerCredentials(security), &port);
    builder.RegisterService(service.get());
    builder.RegisterService(admin.get());
    server = builder.BuildAndStart();
  }
  ~TestServer() {
    if (server != nullptr) server->Shutdown();
  }
  std::string address() const { return "127.0.0.1:" + std::to_string(port); }
};

std::shared_ptr<grpc::Channel> Channel(const std::string& address,
                                       std::shared_ptr<grpc::ChannelCredentials> credentials) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_ENABLE_HTTP_PROXY, 0);
  return grpc::CreateCustomChannel(address, std::move(credentials), args);
}

std::shared_ptr<grpc::ChannelCredentials> Tls(const TestCertificates& c,
                                              const std::string& cert = "",
                                              const std::string& key = "") {
  grpc::SslCredentialsOptions o;
  o.pem_root_certs = c.ca_pem;
  o.pem_cert_chain = cert;
  o.pem_private_key = key;
  return grpc::SslCredentials(o);
}

std::unique_ptr<grpc::ClientContext> Context(const std::string& authorization = "") {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  if (!authorization.empty()) context->AddMetadata(kAuthorizationHeader, authorization);
  return context;
}

grpc::Status GetLoad(const std::shared_ptr<grpc::Channel>& channel) {
  moe::v1::LoadSnapshot snapshot;
  return moe::v1::Telemetry::NewStub(channel)->GetLoad(Context().get(), {}, &snapshot);
}

grpc::Status ResetLoad(const std::shared_ptr<grpc::Channel>& channel,
                       const std::string& authorization = "") {
  moe::v1::ResetLoadResponse response;
  return moe::v1::Telemetry::NewStub(channel)->ResetLoad(Context(authorization).get(), {},
                                                         &response);
}

grpc::Status Rebalance(const std::shared_ptr<grpc::Channel>& channel,
                       const std::string& authorization = "") {
  moe::v1::RebalanceResponse response;
  return moe::v1::Admin::NewStub(channel)->Rebalance(Context(authorization).get(), {}, &response);
}

TEST(CallAuthorizerTest, WithoutATokenAdministrationIsForLoopbackOnly) {
  TestServer local(ServerSecurity{}, /*loopback=*/true);
  auto channel = Channel(local.address(), grpc::InsecureChannelCredentials());
  EXPECT_TRUE(ResetLoad(channel).ok());
  EXPECT_TRUE(GetLoad(channel).ok());

  TestServer exposed(ServerSecurity{}, /*loopback=*/false);
  channel = Channel(exposed.address(), grpc::InsecureChannelCredentials());
  EXPECT_TRUE(GetLoad(channel).ok()) << "reading stays open to users";
  for (const grpc::Status& s : {ResetLoad(channel), Rebalance(channel)}) {
    EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
    EXPECT_NE(s.error_message().find("--admin-token-file"), std::string::npos) << s.error_message();
  }
  EXPECT_EQ(exposed.aggregator.Snapshot().epoch, 1u) << "a refused reset must not reset";
}

TEST(CallAuthorizerTest, AdministrationNeedsTheTokenOnceOneIsSet) {
  ServerSecurity security;
  security.admin_token = kToken;
  for (bool loopback : {true, false}) {
    TestServer server(security, loopback);
    auto channel = Channel(server.address(), grpc::InsecureChannelCredentials());
    EXPECT_TRUE(GetLoad(channel).ok());
    grpc::Status none = ResetLoad(channel);
    EXPECT_EQ(none.error_code(), grpc::StatusCode::UNAUTHENTICATED);
    EXPECT_NE(none.error_message().find("authorization: Bearer TOKEN"), std::string::npos);
    for (const std::string& wrong :
         {std::string(kToken), "Bearer " + std::string(kToken) + "x",
          std::string("Bearer 0123456789abcdef012X"), std::string("Bearer ")}) {
      EXPECT_EQ(ResetLoad(channel, wrong).error_code(), grpc::StatusCode::UNAUTHENTICATED) << wrong;
    }
    EXPECT_EQ(Rebalance(channel).error_code(), grpc::StatusCode::UNAUTHENTICATED);
    EXPECT_EQ(server.aggregator.Snapshot().epoch, 1u);
    EXPECT_TRUE(ResetLoad(channel, std::string("Bearer ") + kToken).ok());
    EXPECT_EQ(server.aggregator.Snapshot().epoch, 2u);
    EXPECT_TRUE(ResetLoad(channel, std::string("bearer  ") + kToken).ok());  // RFC 7235
    EXPECT_EQ(server.aggregator.Snapshot().epoch, 3u);
    // Past the credential check, Rebalance answers for itself (this server cannot re-place).
    EXPECT_EQ(Rebalance(channel, std::string("Bearer ") + kToken).error_code(),
              grpc::StatusCode::UNAVAILABLE);
  }
}

// The scheme is case-insensitive and may be followed by several spaces (RFC 7235); anything else
// presents no credentials.
TEST(BearerCredentialsTest, SchemeIsCaseInsensitive) {
  EXPECT_EQ(BearerCredentials("Bearer abc"), "abc");
  EXPECT_EQ(BearerCredentials("bearer abc"), "abc");
  EXPECT_EQ(BearerCredentials("BEARER   abc"), "abc");
  EXPECT_EQ(BearerCredentials("Bearer "), "");
  EXPECT_EQ(BearerCredentials("Bearerabc"), "");
  EXPECT_EQ(BearerCredentials("Basic abc"), "");
  EXPECT_EQ(BearerCredentials("abc"), "");
  EXPECT_EQ(BearerCredentials(""), "");
}

TEST(CallAuthorizerTest, MutualTlsRefusesCallersWithoutACertificateFromTheCa) {
  const TestCertificates& c = TestCertificates::Get();
  if (!c.error.empty()) GTEST_SKIP() << "SKIP: no test certificates: " << c.error;
  ServerSecurity security;
  security.certificate_chain_pem = c.server_pem;
  security.private_key_pem = c.server_key;
  security.client_ca_pem = c.ca_pem;
  TestServer server(security, /*loopback=*/true);
  ASSERT_NE(server.server, nullptr);

  EXPECT_TRUE(GetLoad(Channel(server.address(), Tls(c, c.client_pem, c.client_key))).ok());
  EXPECT_TRUE(ResetLoad(Channel(server.address(), Tls(c, c.client_pem, c.client_key))).ok());
  const grpc::Status anonymous = GetLoad(Channel(server.address(), Tls(c)));
  EXPECT_EQ(anonymous.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_NE(anonymous.error_message().find("client certificate"), std::string::npos);
  EXPECT_EQ(ResetLoad(Channel(server.address(), Tls(c))).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  // A certificate the CA did not sign fails the handshake itself.
  EXPECT_EQ(GetLoad(Channel(server.address(), Tls(c, c.stranger_pem, c.stranger_key))).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  // Plaintext does not reach a TLS port.
  EXPECT_EQ(GetLoad(Channel(server.address(), grpc::InsecureChannelCredentials())).error_code(),
            grpc::StatusCode::UNAVAILABLE);
}

TEST(PinnedCredentialsTest, SameCertificateComparesTheFirstCertificatesBody) {
  const std::string a = "-----BEGIN CERTIFICATE-----\nAAAA\nBBBB\n-----END CERTIFICATE-----\n";
  EXPECT_TRUE(SameCertificate(
      a, "x\n-----BEGIN CERTIFICATE-----\r\nAAAABBBB\r\n-----END CERTIFICATE-----"));
  EXPECT_FALSE(
      SameCertificate(a, "-----BEGIN CERTIFICATE-----\nAAAABBBC\n-----END CERTIFICATE-----\n"));
  EXPECT_FALSE(SameCertificate("", ""));
  EXPECT_FALSE(SameCertificate("no pem", "no pem"));
}

// The worker's side: it trusts the certificate the coordinator sent through MPI, whatever names
// it carries, and nothing else, however well signed.
TEST(PinnedCredentialsTest, TrustsExactlyThePinnedCertificate) {
  const TestCertificates& c = TestCertificates::Get();
  if (!c.error.empty()) GTEST_SKIP() << "SKIP: no test certificates: " << c.error;
  ServerSecurity coordinator;
  coordinator.certificate_chain_pem = c.server_pem + c.ca_pem;  // a chain: the leaf is pinned
  coordinator.private_key_pem = c.server_key;
  TestServer server(coordinator, /*loopback=*/true);
  ASSERT_NE(server.server, nullptr);
  EXPECT_TRUE(
      GetLoad(Channel(server.address(), WorkerChannelCredentials(coordinator.LeafCertificatePem())))
          .ok());
  EXPECT_EQ(
      GetLoad(Channel(server.address(), WorkerChannelCredentials(c.stranger_pem))).error_code(),
      grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(GetLoad(Channel(server.address(), WorkerChannelCredentials(""))).error_code(),
            grpc::StatusCode::UNAVAILABLE)
      << "empty pin: plaintext, which a TLS port refuses";

  // A certificate that does not name the address dialled: the pin, not the name, decides.
  ServerSecurity named_elsewhere;
  named_elsewhere.certificate_chain_pem = c.elsewhere_pem;
  named_elsewhere.private_key_pem = c.elsewhere_key;
  TestServer elsewhere(named_elsewhere, /*loopback=*/true);
  ASSERT_NE(elsewhere.server, nullptr);
  EXPECT_TRUE(
      GetLoad(Channel(elsewhere.address(), WorkerChannelCredentials(c.elsewhere_pem))).ok());

  // An impostor on the address, with a certificate for the same names.
  ServerSecurity impostor;
  impostor.certificate_chain_pem = c.stranger_pem;
  impostor.private_key_pem = c.stranger_key;
  TestServer fake(impostor, /*loopback=*/true);
  ASSERT_NE(fake.server, nullptr);
  EXPECT_EQ(
      GetLoad(Channel(fake.address(), WorkerChannelCredentials(coordinator.LeafCertificatePem())))
          .error_code(),
      grpc::StatusCode::UNAVAILABLE);
}

}  // namespace
}  // namespace moe
