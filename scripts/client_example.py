#!/usr/bin/python3
"""A minimal Python client of moe.v1.Inference, with Debian's python3-grpcio.

Its interpreter is Debian's /usr/bin/python3, where python3-grpcio lives: a `python3` found first
on PATH (a virtual environment, a conda install) usually lacks grpc.

The stubs are generated at build time into build/python (protoc + grpc_python_plugin); to make
them by hand: python3 -m grpc_tools.protoc -Iproto --python_out=OUT --grpc_python_out=OUT
proto/moe/v1/inference.proto

usage: scripts/client_example.py [--server 127.0.0.1:50051] [--prompt TEXT] [--max-tokens N]
                                 [--label LABEL] [--tls-ca CA.pem [--tls-cert C.pem --tls-key C.key]]

Prints the server's request id with the usage: the request_id of the request's records in the
server's routing trace (--routing-trace).
"""
import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.environ.get("MOE_PYTHON_STUBS", os.path.join(HERE, "..", "build", "python")))

import grpc  # noqa: E402
from moe.v1 import inference_pb2 as pb  # noqa: E402
from moe.v1 import inference_pb2_grpc as pbg  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--server", default="127.0.0.1:50051")
    ap.add_argument("--prompt", default="The capital of France is")
    ap.add_argument("--max-tokens", type=int, default=24)
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--label", default="", help="workload label for the server's telemetry and routing trace "
                    "(up to 64 bytes of [A-Za-z0-9._:-])")
    ap.add_argument("--tls-ca", help="speak TLS, trusting these PEM CA certificates (server with --tls-cert)")
    ap.add_argument("--tls-cert", help="PEM client certificate, for a server with --tls-client-ca")
    ap.add_argument("--tls-key", help="PEM private key of --tls-cert")
    args = ap.parse_args()

    # grpc honours $http_proxy even for loopback: switch it off for this channel.
    options = [("grpc.enable_http_proxy", 0)]
    if args.tls_ca:
        def read(path):
            with open(path, "rb") as f:
                return f.read()
        credentials = grpc.ssl_channel_credentials(
            root_certificates=read(args.tls_ca), private_key=read(args.tls_key) if args.tls_key else None,
            certificate_chain=read(args.tls_cert) if args.tls_cert else None)
        channel = grpc.secure_channel(args.server, credentials, options=options)
    else:
        channel = grpc.insecure_channel(args.server, options=options)
    stub = pbg.InferenceStub(channel)
    info = stub.GetModelInfo(pb.GetModelInfoRequest())
    print(f"model: {info.num_hidden_layers} layers, {info.num_local_experts} experts top-{info.num_experts_per_tok}, "
          f"{info.workers} workers")
    request = pb.GenerateRequest(text=args.prompt.encode(), label=args.label,
                                 sampling=pb.SamplingParams(max_tokens=args.max_tokens, temperature=args.temperature))
    try:
        for message in stub.Generate(request, timeout=60):
            print(message.text, end="", flush=True)
            if message.finish_reason:
                u = message.usage
                print(f"\n[{pb.FinishReason.Name(message.finish_reason)}] {u.generated_tokens} tokens, "
                      f"first after {u.time_to_first_token_ms:.1f} ms, all after {u.total_ms:.1f} ms; "
                      f"request {message.request_id}")
    except grpc.RpcError as e:
        print(f"\nerror: {e.code().name}: {e.details()}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
