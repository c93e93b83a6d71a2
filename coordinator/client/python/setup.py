"""Builds the package with its gRPC stubs generated from the repository's proto/ at install time,
by protoc and grpc_python_plugin (Debian: protobuf-compiler, protobuf-compiler-grpc), so the
stubs always match the server they came with:

    python3 -m venv --system-site-packages V   # Debian's python3-grpcio and python3-protobuf
    V/bin/pip install --no-build-isolation ./coordinator/client/python

PROTO_DIR overrides where the .proto files are (default: ../../../proto, the repository's).
"""
import os
import shutil
import subprocess

from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))
PROTOS = ["moe/v1/inference.proto", "moe/v1/telemetry.proto", "moe/v1/admin.proto"]


def generate_stubs():
    proto_dir = os.environ.get("PROTO_DIR", os.path.join(HERE, "..", "..", "..", "proto"))
    plugin, protoc = shutil.which("grpc_python_plugin"), shutil.which("protoc")
    if not (plugin and protoc):
        raise SystemExit("moe-cluster-client: needs protoc and grpc_python_plugin on PATH "
                         "(Debian: apt-get install protobuf-compiler protobuf-compiler-grpc)")
    out = os.path.join(HERE, "moe")
    os.makedirs(os.path.join(out, "v1"), exist_ok=True)
    subprocess.check_call([protoc, f"--proto_path={proto_dir}", f"--python_out={HERE}", f"--grpc_out={HERE}",
                           f"--plugin=protoc-gen-grpc={plugin}"] + [os.path.join(proto_dir, p) for p in PROTOS])
    for d in (out, os.path.join(out, "v1")):
        open(os.path.join(d, "__init__.py"), "a").close()


# Before setup(): its metadata step already lists the packages, the generated `moe.v1` included.
generate_stubs()
setup()
