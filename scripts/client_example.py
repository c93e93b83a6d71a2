#!/usr/bin/python3
"""A minimal Python client of moe-cluster, on its client package (coordinator/client/python, `moe_client`).

With the package installed (any Python 3.9+ with grpcio and protobuf):

    python3 -m venv --system-site-packages V && V/bin/pip install --no-build-isolation ./coordinator/client/python
    V/bin/python scripts/client_example.py --server 127.0.0.1:50051 --prompt "def main("

Without it, from a built checkout, Debian's /usr/bin/python3 (python3-grpcio) runs it on the
package's source and the stubs the build generated into build/python.

usage: scripts/client_example.py [--server 127.0.0.1:50051] [--prompt TEXT] [--max-tokens N]
                                 [--label L] [--tls-ca CA.pem [--tls-cert C.pem --tls-key C.key]]
"""
import argparse
import os
import sys

try:
    import moe_client
except ImportError:  # not installed: the checkout's package and the build's stubs
    HERE = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, os.path.join(HERE, "..", "coordinator", "client", "python"))
    sys.path.insert(0, os.environ.get("MOE_PYTHON_STUBS", os.path.join(HERE, "..", "build", "python")))
    import moe_client

import grpc


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--server", default="127.0.0.1:50051")
    ap.add_argument("--prompt", default="def main(")
    ap.add_argument("--max-tokens", type=int, default=24)
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--label", default="", help="workload label for the server's telemetry and routing trace")
    ap.add_argument("--tls-ca", help="speak TLS, trusting these PEM CA certificates (server with --tls-cert)")
    ap.add_argument("--tls-cert", help="PEM client certificate, for a server with --tls-client-ca")
    ap.add_argument("--tls-key", help="PEM private key of --tls-cert")
    args = ap.parse_args()

    credentials = None
    if args.tls_ca:
        def read(path):
            with open(path, "rb") as f:
                return f.read()
        credentials = grpc.ssl_channel_credentials(
            root_certificates=read(args.tls_ca), private_key=read(args.tls_key) if args.tls_key else None,
            certificate_chain=read(args.tls_cert) if args.tls_cert else None)
    with moe_client.Client(args.server, credentials=credentials) as client:
        try:
            info = client.model_info()
            print(f"model: {info['num_hidden_layers']} layers, {info['num_local_experts']} experts "
                  f"top-{info['num_experts_per_tok']}, {info.get('workers', 0)} workers")
            for chunk in client.generate(args.prompt, max_tokens=args.max_tokens, temperature=args.temperature,
                                         label=args.label, timeout=60):
                print(chunk.text, end="", flush=True)
                if chunk.finish_reason:
                    u = chunk.usage
                    print(f"\n[{chunk.finish_reason.upper()}] {u.generated_tokens} tokens, first after "
                          f"{u.time_to_first_token_ms:.1f} ms, all after {u.total_ms:.1f} ms; request {chunk.request_id}")
        except moe_client.MoeError as e:
            print(f"\nerror: {e.code}: {e.details}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
