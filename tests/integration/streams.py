"""Concurrent streaming clients checked token for token against the single-process tool, for the
integration tests (serving, live re-placement). The caller puts the generated gRPC stubs on
sys.path before importing this."""
import os
import threading

from moe.v1 import inference_pb2 as pb
from harness import generate

PROMPTS = [f"Request number {i}: tell me about {topic}" for i, topic in enumerate(
    ["the sea", "mountains", "a cat", "rivers", "the moon", "cities", "trees", "music",
     "rain", "bread", "stars", "trains", "winter", "books", "gardens", "light"])]


def settings(i, extra_tokens=0):
    """Greedy for even clients, seeded sampling with different settings for odd ones."""
    if i % 2 == 0:
        return dict(max_tokens=24 + i + extra_tokens)
    return dict(max_tokens=24 + i + extra_tokens, temperature=0.7 + 0.05 * i, top_p=0.9, top_k=40 + i,
                seed=1000 + i)


def batch_invariant_cpu():
    """The packed kernels' CPU features (kernels/cpu/packed_matmul.h: AVX-512 F/BW/VL/DQ, F16C, FMA)."""
    with open("/proc/cpuinfo") as f:
        flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    return all(x in flags for x in ("avx512f", "avx512bw", "avx512vl", "avx512dq", "f16c", "fma"))


BATCH_INVARIANT = batch_invariant_cpu()


def tokenize(stub, text):
    return list(stub.Tokenize(pb.TokenizeRequest(text=text.encode(), add_bos=True)).ids)


class Streams:
    """The 16 clients of PROMPTS against `model`, with references from moe-generate alone; each
    generates 24 + i + extra_tokens tokens. tool_args: more flags for the references' tools (the
    cluster's --quantize, say)."""

    def __init__(self, harness, model, extra_tokens=0, tool_args=()):
        self.h, self.model, self.extra_tokens, self.tool_args = harness, model, extra_tokens, list(tool_args)
        self.refs = [self.reference(PROMPTS[i], **settings(i, extra_tokens)) for i in range(len(PROMPTS))]

    def reference(self, prompt, max_tokens, temperature=0.0, top_p=1.0, top_k=0, seed=0):
        out = self.h.run([os.path.join(self.h.bin, "moe-generate"), "--model", self.model, "--prompt", prompt,
                          "--max-tokens", str(max_tokens), "--temperature", str(temperature), "--top-p",
                          str(top_p), "--top-k", str(top_k), "--seed", str(seed), "--print-ids", "--threads", "1",
                          *self.tool_args])
        return [int(x) for x in out.strip().split(",") if x]

    def near_tie(self, prompt_ids, ref, got):
        """True if, at the first position where got and ref differ, the reference's logits for the two
        tokens are within 1e-4 of each other relative to the logit scale."""
        import numpy as np
        k = next((i for i in range(min(len(ref), len(got))) if ref[i] != got[i]), None)
        if k is None:  # one is a prefix of the other: not a tie, a different length
            return False
        out = os.path.join(self.h.work, "tie.npy")
        self.h.run([os.path.join(self.h.bin, "moe-logits"), "--model", self.model, "--tokens",
                    ",".join(map(str, prompt_ids + ref[:k])), "--out", out, *self.tool_args])
        row = np.load(out)[-1]
        gap = abs(float(row[ref[k]]) - float(row[got[k]]))
        print(f"  diverged at token {k}: logits {row[ref[k]]:.6f} vs {row[got[k]]:.6f} (gap {gap:.2e})")
        return gap <= 1e-4 * float(np.abs(row).max())

    def run_clients(self, cluster, label, during=None):
        """All 16 at once; each output must equal its reference. during(): called on this thread
        once every client has received its first tokens, while they all still stream; returns
        (wall time when it returned, the clients' [start, end] times)."""
        check = self.h.check
        n = len(PROMPTS)
        outs, errors, spans = [None] * n, [], [[0.0, 0.0] for _ in range(n)]
        started = threading.Semaphore(0)

        def client(i):
            import time
            spans[i][0] = time.monotonic()
            first = []

            def on_message(msg):
                if msg.token_ids and not first:
                    first.append(True)
                    started.release()
            try:
                outs[i] = generate(cluster.stub, PROMPTS[i], timeout=120, on_message=on_message,
                                   **settings(i, self.extra_tokens))
            except Exception as e:  # noqa: BLE001
                errors.append(f"client {i}: {e}")
            finally:
                if not first:
                    started.release()
                spans[i][1] = time.monotonic()

        threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        during_done = None
        if during is not None:
            import time
            for _ in range(n):
                started.acquire()
            during()
            during_done = time.monotonic()
        for t in threads:
            t.join()
        check(not errors, f"{label}: 16 concurrent streams finished without error {errors[:2]}")
        for i, out in enumerate(outs):
            if out is None:
                continue
            ids, text, last = out
            ref = self.refs[i]
            if ids == ref:
                check(True, f"{label} client {i} ({'greedy' if i % 2 == 0 else 'sampled'}): {len(ids)} tokens "
                      f"equal the single-process tool's; finish {pb.FinishReason.Name(last.finish_reason)}")
            elif not BATCH_INVARIANT and i % 2 == 0 and self.near_tie(tokenize(cluster.stub, PROMPTS[i]), ref, ids):
                check(True, f"{label} client {i}: equal up to a near-tie in the reference (allowed)")
            else:
                check(False, f"{label} client {i}: {ids} != {ref}")
            usage = last.usage
            check(usage.generated_tokens == len(ids) and usage.prompt_tokens > 0
                  and usage.total_ms >= usage.time_to_first_token_ms > 0,
                  f"{label} client {i}: usage {usage.prompt_tokens} prompt, {usage.generated_tokens} generated, "
                  f"TTFT {usage.time_to_first_token_ms:.1f} ms, total {usage.total_ms:.1f} ms")
        return during_done, spans
