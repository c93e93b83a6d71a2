// Test certificates made at run time with the openssl command (Debian's openssl package): a CA, a
// server certificate it signs for localhost and 127.0.0.1, a client certificate it signs, a
// self-signed stranger for the same names, and a self-signed certificate for another name. Nothing
// secret is committed: each test binary makes its own, valid for a day, and removes them at exit.
#pragma once

#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

namespace moe::testing {

struct TestCertificates {
  std::string dir;
  std::string ca_pem, server_pem, server_key, client_pem, client_key, stranger_pem, stranger_key;
  std::string elsewhere_pem,
      elsewhere_key;  // self-signed for moe.example only: not 127.0.0.1's name
  std::string error;  // why they could not be made; empty when they were

  static std::string Read(const std::string& path) {
    std::ifstream in(path);
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
  }

  // Makes them once per process.
  static const TestCertificates& Get() {
    static const TestCertificates* made = [] {
      auto* c = new TestCertificates;
      char tmpl[] = "/tmp/moe-certs-XXXXXX";
      if (mkdtemp(tmpl) == nullptr) {
        c->error = "mkdtemp failed";
        return c;
      }
      c->dir = tmpl;
      std::atexit([] { std::system(("rm -rf " + Get().dir).c_str()); });
      const std::string d = c->dir;
      const std::string quiet = " >/dev/null 2>&1";
      const std::string script =
          "cd " + d + " && " +
          "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 1 -subj "
          "/CN=moe-test-ca" +
          quiet +
          " && openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj "
          "/CN=localhost" +
          quiet + " && printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > san.cnf" +
          " && openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out "
          "server.pem -days 1 -extfile san.cnf" +
          quiet +
          " && openssl req -newkey rsa:2048 -nodes -keyout client.key -out client.csr -subj "
          "/CN=moe-client" +
          quiet +
          " && openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out "
          "client.pem -days 1" +
          quiet +
          " && openssl req -x509 -newkey rsa:2048 -nodes -keyout stranger.key -out stranger.pem "
          "-days 1 -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1" +
          quiet +
          " && openssl req -x509 -newkey rsa:2048 -nodes -keyout elsewhere.key -out elsewhere.pem "
          "-days 1 -subj /CN=moe.example -addext subjectAltName=DNS:moe.example" +
          quiet;
      if (std::system(script.c_str()) != 0) {
        c->error = "the openssl command failed or is missing (scripts/install-deps.sh installs it)";
        return c;
      }
      c->ca_pem = Read(d + "/ca.pem");
      c->server_pem = Read(d + "/server.pem");
      c->server_key = Read(d + "/server.key");
      c->client_pem = Read(d + "/client.pem");
      c->client_key = Read(d + "/client.key");
      c->stranger_pem = Read(d + "/stranger.pem");
      c->stranger_key = Read(d + "/stranger.key");
      c->elsewhere_pem = Read(d + "/elsewhere.pem");
      c->elsewhere_key = Read(d + "/elsewhere.key");
      return c;
    }();
    return *made;
  }
};

}  // namespace moe::testing
