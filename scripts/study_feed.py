#!/usr/bin/env python3
"""Feeds text files to a running moe-cluster as generation requests (the workload of the routing
study), then saves the server's live load telemetry (GetLoad) as JSON.

usage: study_feed.py --server HOST:PORT --files F [F ...] [--label L] [--prompt-chars N]
                     [--max-tokens N] [--concurrency N] [--live OUT.json]

Each file's first --prompt-chars characters are one prompt (prefill), continued greedily for
--max-tokens tokens (decode), under the request label --label when the server takes labels. Prints
one line per request and a summary; exit status 1 if any request failed. Needs Debian's
python3-grpcio and python3-protobuf and the stubs the build generates (build/python).
"""
import argparse
import concurrent.futures
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.environ.get("MOE_PYTHON_STUBS", os.path.join(HERE, "..", "build", "python")))

import grpc  # noqa: E402
from google.protobuf import json_format  # noqa: E402
from moe.v1 import inference_pb2 as pb  # noqa: E402
from moe.v1 import inference_pb2_grpc as pbg  # noqa: E402
from moe.v1 import telemetry_pb2 as tpb  # noqa: E402
from moe.v1 import telemetry_pb2_grpc as tpbg  # noqa: E402


def generate(stub, text, label, max_tokens):
    fields = dict(text=text.encode(), sampling=pb.SamplingParams(max_tokens=max_tokens, temperature=0.0))
    if label and "label" in pb.GenerateRequest.DESCRIPTOR.fields_by_name:
        fields["label"] = label
    request_id, tokens, usage = None, 0, None
    for message in stub.Generate(pb.GenerateRequest(**fields), timeout=600):
        tokens += len(message.token_ids)
        if getattr(message, "request_id", 0):
            request_id = message.request_id
        if message.finish_reason:
            usage = message.usage
    return request_id, tokens, usage


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--server", required=True)
    ap.add_argument("--files", nargs="+", required=True)
    ap.add_argument("--label", default="")
    ap.add_argument("--prompt-chars", type=int, default=3000)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--live", help="write GetLoad's snapshot here (JSON, the proto's field names)")
    a = ap.parse_args(argv)
    if a.prompt_chars < 1 or a.max_tokens < 1 or a.concurrency < 1:
        ap.error("--prompt-chars, --max-tokens and --concurrency must be at least 1")
    channel = grpc.insecure_channel(a.server, options=[("grpc.enable_http_proxy", 0)])
    stub = pbg.InferenceStub(channel)
    texts = []
    for path in a.files:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read(a.prompt_chars)
        if text.strip():
            texts.append((path, text))
    t0 = time.time()
    failed = 0
    with concurrent.futures.ThreadPoolExecutor(a.concurrency) as pool:
        futures = {pool.submit(generate, stub, text, a.label, a.max_tokens): path for path, text in texts}
        for fut in concurrent.futures.as_completed(futures):
            path = futures[fut]
            try:
                rid, n, usage = fut.result()
                print(f"request {rid if rid is not None else '?'}: {os.path.basename(path)}: "
                      f"{usage.prompt_tokens if usage else '?'} prompt + {n} generated tokens")
            except grpc.RpcError as e:
                failed += 1
                print(f"{os.path.basename(path)}: error {e.code().name}: {e.details()}", file=sys.stderr)
    print(f"{len(texts)} requests ({failed} failed) in {time.time() - t0:.1f} s")
    if a.live:
        snapshot = tpbg.TelemetryStub(channel).GetLoad(tpb.GetLoadRequest(), timeout=30)
        with open(a.live, "w") as f:
            json.dump(json_format.MessageToDict(snapshot, preserving_proto_field_name=True), f, indent=1)
        print(f"wrote {a.live}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
