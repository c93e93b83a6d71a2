"""A minimal gRPC server-reflection client (grpc.reflection.v1alpha, what grpcurl and Postman
speak), written against the wire format with Debian's python3-grpcio and python3-protobuf alone:
the reflection protos are not packaged for Python in Debian, and these two requests need only a
few fields of them.

  list_services(channel) -> ["grpc.health.v1.Health", "moe.v1.Inference", ...]
  describe(channel, "moe.v1.Inference") -> {method name: (input type, output type, server streaming)}
"""
import os
import sys

from google.protobuf import descriptor_pb2

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts"))
from protobuf_wire import fields, length_delimited  # noqa: E402

METHOD = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"


def _fields_of(buf):
    """(field, wire type, value) of a reflection message."""
    return ((f.number, f.wire, f.value) for f in fields(buf, "reflection response"))


def _request(number, text):
    return length_delimited(number, text.encode())


def _ask(channel, request, timeout):
    call = channel.stream_stream(METHOD, request_serializer=lambda b: b, response_deserializer=lambda b: b)
    responses = list(call(iter([request]), timeout=timeout))
    if len(responses) != 1:
        raise ValueError(f"reflection: {len(responses)} responses to one request")
    reply = {f: v for f, _, v in _fields_of(responses[0])}
    if 7 in reply:  # error_response {error_code = 1, error_message = 2}
        err = {f: v for f, _, v in _fields_of(reply[7])}
        raise ValueError(f"reflection error {err.get(1)}: {err.get(2, b'').decode()}")
    return reply


def list_services(channel, timeout=10):
    reply = _ask(channel, _request(7, ""), timeout)  # list_services = 7
    names = []
    for f, _, service in _fields_of(reply.get(6, b"")):  # list_services_response.service = 1
        if f == 1:
            names += [v.decode() for f2, _, v in _fields_of(service) if f2 == 1]
    return sorted(names)


def describe(channel, service, timeout=10):
    reply = _ask(channel, _request(4, service), timeout)  # file_containing_symbol = 4
    package, _, name = service.rpartition(".")
    for f, _, blob in _fields_of(reply.get(4, b"")):  # file_descriptor_response.file_descriptor_proto = 1
        if f != 1:
            continue
        file = descriptor_pb2.FileDescriptorProto.FromString(blob)
        if file.package != package:
            continue
        for s in file.service:
            if s.name == name:
                return {m.name: (m.input_type, m.output_type, m.server_streaming) for m in s.method}
    raise ValueError(f"reflection: no descriptor of {service}")
