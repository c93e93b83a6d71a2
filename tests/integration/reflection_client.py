"""A minimal gRPC server-reflection client (grpc.reflection.v1alpha, what grpcurl and Postman
speak), written against the wire format with Debian's python3-grpcio and python3-protobuf alone:
the reflection protos are not packaged for Python in Debian, and these two requests need only a
few fields of them.

  list_services(channel) -> ["grpc.health.v1.Health", "moe.v1.Inference", ...]
  describe(channel, "moe.v1.Inference") -> {method name: (input type, output type, server streaming)}
"""
from google.protobuf import descriptor_pb2

METHOD = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"


def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _read_varint(buf, i):
    value = shift = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, i
        shift += 7


def _fields(buf):
    """(field, wire type, value) of a message; length-delimited values as bytes."""
    i = 0
    while i < len(buf):
        key, i = _read_varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _read_varint(buf, i)
        elif wire == 2:
            n, i = _read_varint(buf, i)
            value, i = buf[i:i + n], i + n
        elif wire == 1:
            value, i = buf[i:i + 8], i + 8
        elif wire == 5:
            value, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"reflection response: unexpected wire type {wire}")
        yield field, wire, value


def _string_field(number, text):
    data = text.encode()
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _ask(channel, request, timeout):
    call = channel.stream_stream(METHOD, request_serializer=lambda b: b, response_deserializer=lambda b: b)
    responses = list(call(iter([request]), timeout=timeout))
    if len(responses) != 1:
        raise ValueError(f"reflection: {len(responses)} responses to one request")
    fields = {f: v for f, _, v in _fields(responses[0])}
    if 7 in fields:  # error_response {error_code = 1, error_message = 2}
        err = {f: v for f, _, v in _fields(fields[7])}
        raise ValueError(f"reflection error {err.get(1)}: {err.get(2, b'').decode()}")
    return fields


def list_services(channel, timeout=10):
    fields = _ask(channel, _string_field(7, ""), timeout)  # list_services = 7
    names = []
    for f, _, service in _fields(fields.get(6, b"")):  # list_services_response.service = 1
        if f == 1:
            names += [v.decode() for f2, _, v in _fields(service) if f2 == 1]
    return sorted(names)


def describe(channel, service, timeout=10):
    fields = _ask(channel, _string_field(4, service), timeout)  # file_containing_symbol = 4
    package, _, name = service.rpartition(".")
    for f, _, blob in _fields(fields.get(4, b"")):  # file_descriptor_response.file_descriptor_proto = 1
        if f != 1:
            continue
        file = descriptor_pb2.FileDescriptorProto.FromString(blob)
        if file.package != package:
            continue
        for s in file.service:
            if s.name == name:
                return {m.name: (m.input_type, m.output_type, m.server_streaming) for m in s.method}
    raise ValueError(f"reflection: no descriptor of {service}")
