"""Python client of moe-cluster's gRPC API (the README's "Serving over gRPC" has the API).

    from moe_client import Client
    client = Client("127.0.0.1:50051")
    for chunk in client.generate("def main(", max_tokens=32):
        print(chunk.text, end="", flush=True)
    print(client.load()["layers"][0]["expert_tokens"])

Errors are MoeError subclasses named after their gRPC status (InvalidArgument, Unavailable,
ResourceExhausted, DeadlineExceeded, Cancelled, Unauthenticated, PermissionDenied), each with
.code (the status name) and .details (the server's message).
"""
from dataclasses import dataclass, field
from typing import Iterator, List, Optional, Sequence

import grpc

from moe.v1 import inference_pb2 as _pb
from moe.v1 import inference_pb2_grpc as _pbg
from moe.v1 import telemetry_pb2 as _tpb
from moe.v1 import telemetry_pb2_grpc as _tpbg

__all__ = ["Client", "Chunk", "Usage", "MoeError", "InvalidArgument", "Unavailable", "ResourceExhausted",
           "DeadlineExceeded", "Cancelled", "Unauthenticated", "PermissionDenied", "to_python"]


class MoeError(Exception):
    """A call that ended with a non-OK gRPC status."""

    def __init__(self, code: str, details: str):
        super().__init__(f"{code}: {details}")
        self.code, self.details = code, details


class InvalidArgument(MoeError):
    pass


class Unavailable(MoeError):
    pass


class ResourceExhausted(MoeError):
    pass


class DeadlineExceeded(MoeError):
    pass


class Cancelled(MoeError):
    pass


class Unauthenticated(MoeError):
    pass


class PermissionDenied(MoeError):
    pass


_ERRORS = {grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument, grpc.StatusCode.UNAVAILABLE: Unavailable,
           grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted, grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
           grpc.StatusCode.CANCELLED: Cancelled, grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
           grpc.StatusCode.PERMISSION_DENIED: PermissionDenied}


def _error(e: grpc.RpcError) -> MoeError:
    return _ERRORS.get(e.code(), MoeError)(e.code().name, e.details() or "")


@dataclass
class Usage:
    prompt_tokens: int
    generated_tokens: int
    time_to_first_token_ms: float
    total_ms: float


@dataclass
class Chunk:
    """One streamed message: new token ids and the text they complete; the last one also has
    finish_reason ("eos", "length" or "stop") and usage."""
    request_id: int
    token_ids: List[int]
    text: str
    finish_reason: Optional[str] = None
    usage: Optional[Usage] = None


_FINISH = {_pb.FINISH_REASON_EOS: "eos", _pb.FINISH_REASON_LENGTH: "length", _pb.FINISH_REASON_STOP: "stop"}


def _repeated(fd) -> bool:
    # protobuf 26+ has FieldDescriptor.is_repeated; 7.x dropped `label`, which 3.x/4.x only have.
    is_repeated = getattr(fd, "is_repeated", None)
    if is_repeated is not None:
        return is_repeated() if callable(is_repeated) else bool(is_repeated)
    return fd.label == fd.LABEL_REPEATED


def to_python(message):
    """A protobuf message as plain Python: dicts of the set fields (by the proto's names), lists,
    ints (int64s stay ints, unlike json_format), floats, strings."""
    out = {}
    for fd, value in message.ListFields():
        if fd.message_type is not None:
            out[fd.name] = [to_python(v) for v in value] if _repeated(fd) else to_python(value)
        else:
            out[fd.name] = list(value) if _repeated(fd) else value
    return out


@dataclass
class Client:
    """A connection to moe-coordinator --listen TARGET. credentials: grpc.ssl_channel_credentials(...)
    for a TLS port; admin_token: for reset_load and rebalance on a port that asks for one."""
    target: str = "127.0.0.1:50051"
    credentials: Optional[grpc.ChannelCredentials] = None
    admin_token: Optional[str] = None
    _channel: grpc.Channel = field(init=False, repr=False)

    def __post_init__(self):
        options = [("grpc.enable_http_proxy", 0)]  # grpc honours $http_proxy even for loopback
        self._channel = (grpc.secure_channel(self.target, self.credentials, options=options) if self.credentials
                         else grpc.insecure_channel(self.target, options=options))
        self._inference = _pbg.InferenceStub(self._channel)
        self._telemetry = _tpbg.TelemetryStub(self._channel)

    def close(self):
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def generate(self, prompt, max_tokens: int = 16, temperature: float = 0.0, top_p: Optional[float] = None,
                 top_k: int = 0, seed: int = 0, stop: Sequence[str] = (), label: str = "",
                 timeout: Optional[float] = None) -> Iterator[Chunk]:
        """Streams the generation of `prompt` (text, BOS prepended by the server; or a list of
        token ids, used as given)."""
        sampling = _pb.SamplingParams(max_tokens=max_tokens, temperature=temperature, top_k=top_k, seed=seed,
                                      stop=[s.encode() for s in stop])
        if top_p is not None:
            sampling.top_p = top_p
        request = _pb.GenerateRequest(sampling=sampling, label=label)
        if isinstance(prompt, str):
            request.text = prompt.encode()
        else:
            request.token_ids.ids.extend(int(t) for t in prompt)
        try:
            for m in self._inference.Generate(request, timeout=timeout):
                usage = None
                if m.finish_reason:
                    u = m.usage
                    usage = Usage(u.prompt_tokens, u.generated_tokens, u.time_to_first_token_ms, u.total_ms)
                yield Chunk(m.request_id, list(m.token_ids), m.text, _FINISH.get(m.finish_reason), usage)
        except grpc.RpcError as e:
            raise _error(e) from None

    def generate_text(self, prompt, **kwargs) -> str:
        """The whole generated text at once."""
        return "".join(c.text for c in self.generate(prompt, **kwargs))

    def tokenize(self, text: str, add_bos: bool = True) -> List[int]:
        try:
            return list(self._inference.Tokenize(_pb.TokenizeRequest(text=text.encode(), add_bos=add_bos)).ids)
        except grpc.RpcError as e:
            raise _error(e) from None

    def model_info(self) -> dict:
        try:
            return to_python(self._inference.GetModelInfo(_pb.GetModelInfoRequest()))
        except grpc.RpcError as e:
            raise _error(e) from None

    def load(self) -> dict:
        """The server's load telemetry (GetLoad) as plain Python: layers, workers, labels, window..."""
        try:
            return to_python(self._telemetry.GetLoad(_tpb.GetLoadRequest()))
        except grpc.RpcError as e:
            raise _error(e) from None

    def _admin(self):
        return [("authorization", f"Bearer {self.admin_token}")] if self.admin_token else None

    def reset_load(self) -> int:
        """Zeroes the load counters; returns the new telemetry epoch."""
        try:
            return self._telemetry.ResetLoad(_tpb.ResetLoadRequest(), metadata=self._admin()).epoch
        except grpc.RpcError as e:
            raise _error(e) from None
