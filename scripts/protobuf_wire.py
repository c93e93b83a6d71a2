"""The protobuf wire format by hand, where no generated Python classes exist for a message (Debian
packages none for SentencePiece's tokenizer.model or for gRPC's reflection service): varints,
the fields of a message, a length-delimited field."""
from collections import namedtuple

# One field of a message: its number and wire type; value is an int for a varint and bytes
# otherwise (a length-delimited field's payload, a fixed-width field's 4 or 8 bytes); the whole
# field, key included, is buf[start:end].
Field = namedtuple("Field", "number wire value start end")


def encode_varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def read_varint(buf, i):
    """The varint at buf[i:] and the offset after it."""
    value = shift = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, i
        shift += 7


def fields(buf, what="a protobuf message"):
    """Each Field of a message in order. ValueError, naming `what`, on a wire type protobuf no
    longer uses (groups) or does not have."""
    i = 0
    while i < len(buf):
        start = i
        key, i = read_varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = read_varint(buf, i)
        elif wire == 2:
            n, i = read_varint(buf, i)
            value, i = bytes(buf[i:i + n]), i + n
        elif wire == 1:
            value, i = bytes(buf[i:i + 8]), i + 8
        elif wire == 5:
            value, i = bytes(buf[i:i + 4]), i + 4
        else:
            raise ValueError(f"{what}: unsupported protobuf wire type {wire}")
        yield Field(number, wire, value, start, i)


def length_delimited(number, data):
    """Field `number` holding the bytes `data` (a string, bytes or an embedded message)."""
    return encode_varint(number << 3 | 2) + encode_varint(len(data)) + data
