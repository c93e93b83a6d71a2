#!/usr/bin/env python3
"""The port's security on a real cluster (mpirun, coordinator + 2 workers, loopback), with
certificates made here by openssl (a CA, a server certificate for localhost/127.0.0.1, a client
certificate, a stranger's self-signed one):

- TLS with client certificates required (--tls-cert, --tls-key, --tls-client-ca): a client with a
  certificate from the CA generates exactly what moe-generate gives alone; no client certificate
  is UNAUTHENTICATED, a stranger's or plaintext fails the handshake; health stays open.
- The workers report over TLS, pinned to the coordinator's certificate: their telemetry covers
  every routed token.
- The administrative token (--admin-token-file): ResetLoad and Rebalance without it or with a
  wrong one are UNAUTHENTICATED and change nothing; with it they work.
- moe-cli's --tls-ca, --tls-cert, --tls-key and --admin-token-file, and client_example.py's TLS
  flags; bad security flags are one line before the cluster starts.

usage: security_test.py BIN_DIR SOURCE_DIR WORK_DIR PYTHON_STUBS_DIR
Prints "N passed, M failed" and exits non-zero on any failure.
"""
import json
import os
import subprocess
import sys
import time

BIN, SRC, WORK, STUBS = sys.argv[1:5]
sys.path.insert(0, STUBS)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import grpc  # noqa: E402
from moe.v1 import inference_pb2 as pb  # noqa: E402
from moe.v1 import inference_pb2_grpc as pbg  # noqa: E402
from moe.v1 import telemetry_pb2 as tpb  # noqa: E402
from moe.v1 import admin_pb2_grpc as apbg  # noqa: E402
from moe.v1 import telemetry_pb2_grpc as tpbg  # noqa: E402
from harness import Harness, generate  # noqa: E402
from streams import Streams  # noqa: E402

PY = "/usr/bin/python3"
MODEL = os.path.join(WORK, "model")
CERTS = os.path.join(WORK, "certs")
harness = Harness(BIN, SRC, WORK)
check, run = harness.check, harness.run


def make_certificates():
    os.makedirs(CERTS, exist_ok=True)
    q = dict(cwd=CERTS, check=True, capture_output=True)
    req = ["openssl", "req", "-newkey", "rsa:2048", "-nodes"]
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
                    "ca.pem", "-days", "1", "-subj", "/CN=moe-test-ca"], **q)
    with open(os.path.join(CERTS, "san.cnf"), "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for name, extra in (("server", ["-extfile", "san.cnf"]), ("client", [])):
        subprocess.run(req + ["-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN=moe-{name}"], **q)
        subprocess.run(["openssl", "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                        "-CAcreateserial", "-out", f"{name}.pem", "-days", "1"] + extra, **q)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "stranger.key", "-out",
                    "stranger.pem", "-days", "1", "-subj", "/CN=localhost"], **q)
    with open(os.path.join(CERTS, "admin.token"), "w") as f:
        f.write(os.urandom(16).hex() + "\n")
    with open(os.path.join(CERTS, "api.key"), "w") as f:
        f.write("sk-" + os.urandom(16).hex() + "\n")
    with open(os.path.join(CERTS, "short.token"), "w") as f:
        f.write("letmein\n")


def cert(name):
    return os.path.join(CERTS, name)


def read(name):
    with open(cert(name), "rb") as f:
        return f.read()


def tls(client=None):
    """Channel credentials trusting the test CA, with the named client certificate if any."""
    if client is None:
        return grpc.ssl_channel_credentials(root_certificates=read("ca.pem"))
    return grpc.ssl_channel_credentials(root_certificates=read("ca.pem"), private_key=read(f"{client}.key"),
                                        certificate_chain=read(f"{client}.pem"))


def code_of(fn):
    try:
        fn()
        return grpc.StatusCode.OK, ""
    except grpc.RpcError as e:
        return e.code(), e.details()


def main():
    os.makedirs(WORK, exist_ok=True)
    make_certificates()
    run([PY, os.path.join(SRC, "scripts/make_model.py"), "--out", MODEL, "--vocab", "32000", "--hidden", "64",
         "--intermediate", "96", "--layers", "2", "--heads", "4", "--kv-heads", "2", "--experts", "8",
         "--top-k", "2", "--max-pos", "1024", "--dtype", "bf16", "--seed", "11",
         "--tokenizer", os.path.join(SRC, "core/model/tokenizer/tokenizer.model")])
    streams = Streams(harness, MODEL)
    prompt = "Tell me about the sea"
    reference = streams.reference(prompt, 12)
    token = read("admin.token").decode().strip()

    # Bad security flags: one line, before any rank starts.
    for flags, fragment in ((["--tls-cert", cert("server.pem")], "--tls-cert and --tls-key go together"),
                            (["--tls-client-ca", cert("ca.pem")], "--tls-client-ca needs TLS"),
                            (["--tls-cert", cert("server.pem"), "--tls-key", cert("ca.pem")], "--tls-key: "),
                            (["--admin-token-file", cert("short.token")], "at least 16 characters"),
                            (["--http-listen", "127.0.0.1:0", "--http-api-key-file", cert("short.token")],
                             "--http-api-key-file: the token on the first line")):
        p = subprocess.run([os.path.join(BIN, "moe-coordinator"), "--model", MODEL, "--listen", "127.0.0.1:0",
                            *flags], capture_output=True, text=True, timeout=60)
        check(p.returncode != 0 and fragment in p.stderr and len(p.stderr.strip().splitlines()) == 1,
              f"moe-coordinator {' '.join(os.path.basename(f) for f in flags)}: {p.stderr.strip()!r}")

    http_port_file = os.path.join(WORK, "http-port")
    c = harness.cluster(2, "--tls-cert", cert("server.pem"), "--tls-key", cert("server.key"), "--tls-client-ca",
                        cert("ca.pem"), "--admin-token-file", cert("admin.token"), "--telemetry-interval-ms", "200",
                        "--http-listen", "127.0.0.1:0", "--http-port-file", http_port_file, "--http-api-key-file",
                        cert("api.key"), model=MODEL, credentials=tls("client"))
    try:
        log = open(c.log.name).read()
        check("(TLS, client certificates required)" in log, "the start-up line says TLS with client certificates")
        ids, _, last = generate(c.stub, prompt, timeout=60, max_tokens=12)
        check(ids == reference and last.finish_reason == pb.FINISH_REASON_LENGTH,
              f"mutual TLS: the client's tokens equal moe-generate's alone ({len(ids)} tokens)")

        # Other callers.
        def on(credentials, fn):
            channel = (grpc.insecure_channel(c.address, options=[("grpc.enable_http_proxy", 0)])
                       if credentials is None else grpc.secure_channel(c.address, credentials))
            try:
                return code_of(lambda: fn(channel))
            finally:
                channel.close()

        gen = lambda ch: generate(pbg.InferenceStub(ch), prompt, timeout=10, max_tokens=2)  # noqa: E731
        code, details = on(tls(), gen)
        check(code == grpc.StatusCode.UNAUTHENTICATED and "client certificate" in details,
              f"TLS without a client certificate: {code.name} '{details}'")
        code, _ = on(tls(), lambda ch: pbg.InferenceStub(ch).GetModelInfo(pb.GetModelInfoRequest(), timeout=10))
        check(code == grpc.StatusCode.UNAUTHENTICATED, f"GetModelInfo without a client certificate: {code.name}")
        code, _ = on(tls(), lambda ch: tpbg.TelemetryStub(ch).GetLoad(tpb.GetLoadRequest(), timeout=10))
        check(code == grpc.StatusCode.UNAUTHENTICATED, f"GetLoad without a client certificate: {code.name}")
        code, _ = on(tls("stranger"), gen)
        check(code == grpc.StatusCode.UNAVAILABLE, f"a certificate the CA did not sign: {code.name} (handshake)")
        code, _ = on(None, gen)
        check(code == grpc.StatusCode.UNAVAILABLE, f"plaintext to the TLS port: {code.name}")
        health = lambda ch: ch.unary_unary("/grpc.health.v1.Health/Check", request_serializer=lambda b: b,  # noqa: E731
                                           response_deserializer=lambda b: b)(b"", timeout=10)
        code, _ = on(tls(), health)
        check(code == grpc.StatusCode.OK, "health answers without a client certificate (probes)")

        # The workers' reports over TLS, pinned: every routed token is reported.
        telemetry = tpbg.TelemetryStub(c.channel)
        admin = apbg.AdminStub(c.channel)
        s = harness.wait_for(lambda: (lambda s: s if all(w.alive and w.reported_tokens == w.routed_tokens > 0
                                                         for w in s.workers) else None)(
            telemetry.GetLoad(tpb.GetLoadRequest())), "the workers' reports over TLS")
        if s is not None:
            check(True, "workers report over TLS pinned to the coordinator's certificate: "
                        f"{[(w.rank, w.reports, w.reported_tokens) for w in s.workers]}")

        # The administrative token.
        epoch = telemetry.GetLoad(tpb.GetLoadRequest()).epoch
        for what, metadata in (("no token", None), ("the bare token", (("authorization", token),)),
                               ("a wrong token", (("authorization", "Bearer " + token[:-1] + "x"),))):
            code, details = code_of(lambda: telemetry.ResetLoad(tpb.ResetLoadRequest(), metadata=metadata))
            check(code == grpc.StatusCode.UNAUTHENTICATED, f"ResetLoad with {what}: {code.name} '{details}'")
            code, _ = code_of(lambda: admin.Rebalance(tpb.RebalanceRequest(dry_run=True), metadata=metadata))
            check(code == grpc.StatusCode.UNAUTHENTICATED, f"Rebalance with {what}: {code.name}")
        check(telemetry.GetLoad(tpb.GetLoadRequest()).epoch == epoch, "refused resets reset nothing")
        bearer = (("authorization", "Bearer " + token),)
        hosts = [w.host for w in telemetry.GetLoad(tpb.GetLoadRequest()).workers]
        admin_hosts = [w.host for w in telemetry.GetLoad(tpb.GetLoadRequest(), metadata=bearer).workers]
        check(hosts == ["", ""] and all(admin_hosts),
              f"GetLoad names the workers' hosts to administrators only: {hosts} without the token, "
              f"{admin_hosts} with it")
        r = telemetry.ResetLoad(tpb.ResetLoadRequest(), metadata=bearer)
        check(r.epoch == epoch + 1, f"ResetLoad with the token: epoch {epoch} -> {r.epoch}")
        code, _ = code_of(lambda: admin.Rebalance(tpb.RebalanceRequest(dry_run=True), metadata=bearer))
        check(code == grpc.StatusCode.OK, f"Rebalance (dry run) with the token: {code.name}")

        # moe-cli.
        cli = [os.path.join(BIN, "moe-cli"), "--server", c.address, "--tls-ca", cert("ca.pem"), "--tls-cert",
               cert("client.pem"), "--tls-key", cert("client.key")]
        p = subprocess.run(cli + ["generate", "--token-ids", ",".join(map(str, [1, 22557])), "--max-tokens", "3",
                                  "--ids"], capture_output=True, text=True, timeout=60)
        check(p.returncode == 0 and len(p.stdout.strip().split(",")) == 3, f"moe-cli generate over mutual TLS: {p.stdout.strip()}")
        p = subprocess.run(cli + ["reset-load"], capture_output=True, text=True, timeout=60)
        check(p.returncode != 0 and "admin token" in p.stderr, f"moe-cli reset-load without the token: {p.stderr.strip()}")
        p = subprocess.run(cli + ["--admin-token-file", cert("admin.token"), "reset-load"], capture_output=True,
                           text=True, timeout=60)
        check(p.returncode == 0 and f"epoch {epoch + 2}" in p.stdout, f"moe-cli reset-load with the token: {p.stdout.strip()}")
        p = subprocess.run([os.path.join(BIN, "moe-cli"), "--server", c.address, "--tls-cert", cert("client.pem"),
                            "info"], capture_output=True, text=True, timeout=60)
        check(p.returncode == 2 and "--tls-cert and --tls-key go together" in p.stderr,
              f"moe-cli --tls-cert without --tls-key: {p.stderr.strip()}")

        p = subprocess.run([PY, os.path.join(SRC, "scripts/client_example.py"), "--server", c.address, "--tls-ca",
                            cert("ca.pem"), "--tls-cert", cert("client.pem"), "--tls-key", cert("client.key"),
                            "--max-tokens", "4"], capture_output=True, text=True, timeout=60,
                           env=dict(os.environ, MOE_PYTHON_STUBS=STUBS))
        check(p.returncode == 0 and "LENGTH] 4 tokens" in p.stdout,
              f"client_example.py over mutual TLS: {p.stdout.strip().splitlines()[-1:] or p.stderr.strip()}")

        # The OpenAI HTTP API on the same certificate (HTTPS, client certificates) and its API key.
        http_port = int(harness.wait_for(lambda: os.path.exists(http_port_file) and open(http_port_file).read().strip(),
                                         "the HTTP port file"))
        api_key = read("api.key").decode().strip()
        url = f"https://127.0.0.1:{http_port}"
        body = '{"prompt": "Tell me about the sea", "max_tokens": 4, "temperature": 0}'

        def curl(*args):
            p = subprocess.run(["curl", "-sS", "--max-time", "30", "-w", "\n%{http_code}", *args], capture_output=True,
                               text=True, env=dict(os.environ, no_proxy="*"))
            out, _, code = p.stdout.rpartition("\n")
            return p.returncode, int(code or 0), out
        mtls = ["--cacert", cert("ca.pem"), "--cert", cert("client.pem"), "--key", cert("client.key")]
        rc, code, out = curl(*mtls, "-H", f"Authorization: Bearer {api_key}", f"{url}/v1/completions", "-d", body)
        check(rc == 0 and code == 200 and json.loads(out)["usage"]["completion_tokens"] == 4,
              f"HTTPS with a client certificate and the API key: {code}")
        for what, headers in (("no API key", []), ("a wrong API key", ["-H", f"Authorization: Bearer {api_key}x"])):
            rc, code, out = curl(*mtls, *headers, f"{url}/v1/completions", "-d", body)
            check(code == 401 and json.loads(out)["error"]["code"] == "invalid_api_key",
                  f"HTTPS with {what}: {code} {out}")
        rc, code, out = curl(*mtls, f"{url}/health")
        check(code == 200, f"/health needs no API key (probes): {code}")
        rc, code, _ = curl("--cacert", cert("ca.pem"), "-H", f"Authorization: Bearer {api_key}", f"{url}/health")
        check(rc != 0 and code == 0, f"HTTPS without a client certificate: refused in the handshake (curl exit {rc})")
        rc, code, _ = curl(f"http://127.0.0.1:{http_port}/health")
        check(code != 200, f"plaintext HTTP to the HTTPS port: no answer (curl exit {rc}, HTTP {code})")

        t0 = time.time()
        check(c.stop() == 0, f"SIGTERM: the job exits 0 ({time.time() - t0:.1f} s)")
    finally:
        if c.proc.poll() is None:
            c.stop(__import__("signal").SIGKILL)

    sys.exit(harness.finish())


if __name__ == "__main__":
    main()
