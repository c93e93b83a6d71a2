#!/usr/bin/env python3
"""The gRPC server on a real cluster (mpirun, coordinator + workers, ephemeral loopback port).

- 16 concurrent streaming clients with different prompts and sampling settings, for W=2 and W=4:
  every output equals what the single-process tool (moe-generate) produces for that prompt alone,
  token for token: on CPUs with AVX-512 every product is batch-invariant (a row's result does not
  depend on what shares its batch). On other CPUs the fallback products are not, so there a greedy
  output may differ after a token where the reference itself had a near-tie (the batch changes
  float32 summation order at the 1e-6 level); any such case is checked and reported.
- Every request error and its status code; cancellation mid-stream and a deadline, both freeing
  the KV cache (GetModelInfo); the standard health service; a full queue; a stopped worker
  (health NOT_SERVING and new requests refused at once naming it, both undone when it resumes; at
  shutdown the job aborted within a bound, naming it); a lost worker (UNAVAILABLE
  for what is in flight); a killed worker (kill -9: every stream gets UNAVAILABLE naming its rank at
  once, and so does the log); graceful shutdown on SIGTERM.

usage: serving_test.py BIN_DIR SOURCE_DIR WORK_DIR PYTHON_STUBS_DIR
Prints "N passed, M failed" and exits non-zero on any failure.
"""
import os
import re
import signal
import subprocess
import sys
import threading
import time

BIN, SRC, WORK, STUBS = sys.argv[1:5]
sys.path.insert(0, STUBS)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import grpc  # noqa: E402
from moe.v1 import inference_pb2 as pb  # noqa: E402
import reflection_client  # noqa: E402
from harness import Harness, generate  # noqa: E402
from streams import PROMPTS, Streams, settings, tokenize  # noqa: E402

PY = "/usr/bin/python3"
MODEL = os.path.join(WORK, "model")
harness = Harness(BIN, SRC, WORK)
check, run, results = harness.check, harness.run, harness.results


def Cluster(workers, *server_flags, model=MODEL):
    return harness.cluster(workers, *server_flags, model=model)


def expect_error(what, code, fn, fragment=""):
    try:
        fn()
        check(False, f"{what}: no error")
    except grpc.RpcError as e:
        check(e.code() == code and fragment in e.details(), f"{what}: {e.code().name} '{e.details()}'")


def info(stub):
    return stub.GetModelInfo(pb.GetModelInfoRequest())


def wait_idle(stub, what):
    return harness.wait_idle(stub, what)


def main():
    os.makedirs(WORK, exist_ok=True)
    run([PY, os.path.join(SRC, "scripts/make_model.py"), "--out", MODEL, "--vocab", "32000", "--hidden", "64",
         "--intermediate", "96", "--layers", "2", "--heads", "4", "--kv-heads", "2", "--experts", "8",
         "--top-k", "2", "--max-pos", "1024", "--dtype", "bf16", "--seed", "11",
         "--tokenizer", os.path.join(SRC, "core/model/tokenizer/tokenizer.model")])
    streams = Streams(harness, MODEL)

    # W=4: 16 concurrent clients with every step run whole (--overlap off), and again with every
    # step of two sequences or more run as two micro-batches in ping-pong (--overlap on): the same
    # tokens. (The W=2 cluster below runs the default, --overlap auto.)
    for overlap in ("off", "on"):
        c = Cluster(4, "--overlap", overlap)
        try:
            streams.run_clients(c, f"W=4 --overlap {overlap}")
        finally:
            check(c.stop() == 0, f"W=4 --overlap {overlap}: SIGTERM with nothing in flight: the job exits 0")
        # The stop line counts the steps run as two micro-batches: none with off, some with on.
        with open(c.log.name) as f:
            m = re.search(r"(\d+) steps, (\d+) of them in two micro-batches", f.read())
        check(m is not None and (int(m.group(2)) > 0) == (overlap == "on"),
              f"W=4 --overlap {overlap}: " + (m.group(0) if m else "no step count in the coordinator's stop line"))

    # W=2: 16 clients, every error, cancellation, deadline, health, lost worker.
    c = Cluster(2, "--max-tokens-limit", "256", "--max-prompt-bytes", "65536")
    try:
        streams.run_clients(c, "W=2")
        health = c.channel.unary_unary("/grpc.health.v1.Health/Check", request_serializer=lambda b: b,
                                       response_deserializer=lambda b: b)
        check(health(b"") == b"\x08\x01", "health service says SERVING")
        # Server reflection, as grpcurl or Postman would ask.
        services = reflection_client.list_services(c.channel)
        check({"moe.v1.Inference", "moe.v1.Telemetry", "moe.v1.Admin", "grpc.health.v1.Health"} <= set(services),
              f"reflection lists the services: {services}")
        methods = reflection_client.describe(c.channel, "moe.v1.Inference")
        check(methods.get("Generate") == (".moe.v1.GenerateRequest", ".moe.v1.GenerateResponse", True)
              and {"Tokenize", "Detokenize", "GetModelInfo"} <= set(methods),
              f"reflection describes moe.v1.Inference: {sorted(methods)}")
        i = info(c.stub)
        check(i.workers == 2 and len(i.placement) == 2 and i.vocab_size == 32000 and i.requests_served == 16,
              f"GetModelInfo: {i.workers} workers, placement {list(i.placement[0].worker_rank)}, {i.requests_served} served")
        check(tokenize(c.stub, "Hello world") == [1, 22557, 1526], "Tokenize('Hello world') = [1, 22557, 1526]")
        check(c.stub.Detokenize(pb.DetokenizeRequest(ids=[1, 22557, 1526])).text == "Hello world", "Detokenize")

        # No sampling at all: the documented defaults (16 tokens, greedy), not an error.
        msgs = list(c.stub.Generate(pb.GenerateRequest(text=b"Hello")))
        got = [t for m in msgs for t in m.token_ids]
        want = streams.reference("Hello", 16)
        check(got == want and msgs[-1].usage.generated_tokens == len(want),
              f"Generate without sampling: {len(got)} greedy tokens, as moe-generate --max-tokens 16 gives")

        bad = grpc.StatusCode.INVALID_ARGUMENT
        expect_error("empty prompt", bad, lambda: generate(c.stub, "", max_tokens=4), "prompt is empty")
        expect_error("no prompt at all", bad, lambda: list(c.stub.Generate(pb.GenerateRequest(
            sampling=pb.SamplingParams(max_tokens=4)))), "prompt is empty")
        expect_error("prompt + max_tokens beyond the context", bad,
                     lambda: generate(c.stub, [1] * 1000, max_tokens=100), "exceeds the model's context of 1024")
        expect_error("max_tokens 0", bad, lambda: generate(c.stub, "hi", max_tokens=0), "max_tokens must be >= 1")
        expect_error("max_tokens above the server limit", bad, lambda: generate(c.stub, "hi", max_tokens=300),
                     "exceeds the server's limit of 256")
        expect_error("negative temperature", bad, lambda: generate(c.stub, "hi", max_tokens=4, temperature=-0.5),
                     "temperature must be >= 0")
        expect_error("top_p 0", bad, lambda: generate(c.stub, "hi", max_tokens=4, top_p=0.0), "top_p must be in (0, 1]")
        expect_error("top_p 1.5", bad, lambda: generate(c.stub, "hi", max_tokens=4, top_p=1.5), "top_p must be in (0, 1]")
        expect_error("negative top_k", bad, lambda: generate(c.stub, "hi", max_tokens=4, top_k=-1), "top_k must be >= 0")
        expect_error("token id outside the vocabulary", bad, lambda: generate(c.stub, [1, 32000], max_tokens=4),
                     "token id 32000 is outside the vocabulary")
        expect_error("negative token id", bad, lambda: generate(c.stub, [1, -7], max_tokens=4), "outside the vocabulary")
        raw = c.channel.unary_stream("/moe.v1.Inference/Generate", request_serializer=lambda b: b,
                                     response_deserializer=pb.GenerateResponse.FromString)
        # text = b"\xff\xfe" (field 1), sampling.max_tokens = 5 (field 3)
        expect_error("invalid UTF-8", bad, lambda: list(raw(b"\x0a\x02\xff\xfe\x1a\x02\x08\x05")), "not valid UTF-8")
        expect_error("invalid UTF-8 to Tokenize", bad,
                     lambda: c.stub.Tokenize(pb.TokenizeRequest(text=b"ok\xc3")), "not valid UTF-8")
        # Limits checked before any work (this cluster: --max-prompt-bytes 65536, the default 4 MiB
        # messages, 16 stop strings of 256 bytes).
        t0 = time.time()
        expect_error("prompt text over --max-prompt-bytes", bad,
                     lambda: generate(c.stub, "x" * 65537, max_tokens=4), "exceeds the server's limit of 65536")
        expect_error("Tokenize text over --max-prompt-bytes", bad,
                     lambda: c.stub.Tokenize(pb.TokenizeRequest(text=b"x" * 65537)), "--max-prompt-bytes")
        check(time.time() - t0 < 1, f"oversized texts refused in {time.time() - t0:.2f} s, before tokenizing")
        expect_error("a message over 4 MiB", grpc.StatusCode.RESOURCE_EXHAUSTED,
                     lambda: c.stub.Tokenize(pb.TokenizeRequest(text=b"x" * (5 << 20))))
        expect_error("17 stop strings", bad, lambda: generate(c.stub, "hi", max_tokens=4, stop=[b"a"] * 17),
                     "sampling.stop holds 17 strings; the server's limit is 16")
        expect_error("a 257-byte stop string", bad, lambda: generate(c.stub, "hi", max_tokens=4, stop=[b"a" * 257]),
                     "257 bytes")
        expect_error("an empty stop string", bad, lambda: generate(c.stub, "hi", max_tokens=4, stop=[b""]),
                     "empty string")

        # A bad request in the middle of good ones disturbs nothing.
        ok_out = []
        t = threading.Thread(target=lambda: ok_out.append(generate(c.stub, PROMPTS[0], timeout=60, **settings(0))))
        t.start()
        expect_error("bad request beside a running one", bad, lambda: generate(c.stub, "", max_tokens=4))
        t.join()
        check(ok_out and ok_out[0][0] == streams.refs[0], "the running request is unaffected")

        # Stop strings: the text ends before the first stop string, finish reason STOP.
        ids, text, last = generate(c.stub, PROMPTS[2], max_tokens=40)
        start = next((i for i in range(len(text) // 3, len(text) - 3) if text[i:i + 3].strip() == text[i:i + 3]), None)
        if check(start is not None, f"a stop string can be picked from {text!r}"):
            stop = text[start:start + 3]
            _, text2, last2 = generate(c.stub, PROMPTS[2], max_tokens=40, stop=[stop.encode()])
            check(last2.finish_reason == pb.FINISH_REASON_STOP and text2 == text[:text.find(stop)],
                  f"stop string {stop!r}: finish {pb.FinishReason.Name(last2.finish_reason)}, text cut before it")

        check(c.stop() == 0, "W=2: SIGTERM with nothing in flight: the job exits 0")
    finally:
        if c.proc.poll() is None:
            c.stop(signal.SIGKILL)

    # On a larger model, so that requests stay in flight long enough to act on them.
    slow = os.path.join(WORK, "slow")
    run([PY, os.path.join(SRC, "scripts/make_model.py"), "--out", slow, "--vocab", "32000", "--hidden", "512",
         "--intermediate", "1024", "--layers", "4", "--heads", "8", "--kv-heads", "2", "--experts", "8",
         "--top-k", "2", "--max-pos", "4096", "--dtype", "bf16", "--seed", "12",
         "--tokenizer", os.path.join(SRC, "core/model/tokenizer/tokenizer.model")])

    # Cancellation, deadline and graceful shutdown. Each long request would take seconds; the
    # server must be idle again well before that.
    metrics_port_file = os.path.join(WORK, "metrics-port")
    c = Cluster(2, "--metrics-listen", "127.0.0.1:0", "--metrics-port-file", metrics_port_file, model=slow)
    try:
        call = c.stub.Generate(pb.GenerateRequest(text=b"A long story", sampling=pb.SamplingParams(max_tokens=3000)))
        got = [next(call) for _ in range(3)]
        i = info(c.stub)
        check(i.running_sequences == 1 and i.kv_cache_bytes_used > 0,
              f"mid-stream: 1 running, {i.kv_cache_bytes_used} KV bytes reserved after {len(got)} messages")
        t0 = time.time()
        call.cancel()
        wait_idle(c.stub, "cancelled mid-stream")
        check(time.time() - t0 < 2, f"cancellation took effect in {time.time() - t0:.2f} s")
        t0 = time.time()
        expect_error("deadline", grpc.StatusCode.DEADLINE_EXCEEDED,
                     lambda: generate(c.stub, "A long story", timeout=0.5, max_tokens=3000))
        wait_idle(c.stub, "after the deadline")
        check(time.time() - t0 < 3, f"the expired request left the batch {time.time() - t0:.2f} s after it started")
        # Each ending counted under its own status: the expiry is not a cancellation.
        import urllib.request
        page = urllib.request.urlopen(f"http://127.0.0.1:{open(metrics_port_file).read().strip()}/metrics").read().decode()
        outcomes = {line.split('"')[1]: float(line.split()[-1]) for line in page.splitlines()
                    if line.startswith("moe_requests_total{")}
        check(outcomes.get("CANCELLED") == 1 and outcomes.get("DEADLINE_EXCEEDED") == 1,
              f"moe_requests_total: one CANCELLED, one DEADLINE_EXCEEDED ({outcomes})")

        # Graceful shutdown: SIGTERM while a request runs; it finishes, new ones are refused. 1200
        # tokens: long enough to still be running when the signal goes out on CPUs with AMX, where
        # 400 could finish between two polls.
        done = []
        t = threading.Thread(target=lambda: done.append(generate(c.stub, PROMPTS[4], timeout=120, max_tokens=1200)))
        t.start()
        while info(c.stub).running_sequences == 0 and t.is_alive():
            time.sleep(0.01)
        check(t.is_alive(), "SIGTERM is sent while the request is in flight")
        rc = c.stop(signal.SIGTERM)
        t.join()
        check(done and done[0][2].finish_reason == pb.FINISH_REASON_LENGTH and len(done[0][0]) == 1200,
              "SIGTERM: the request in flight still finished (1200 tokens)")
        check(rc == 0, f"SIGTERM: the job exited {rc}")
    finally:
        c.kill()

    # A full queue and a lost worker.
    c = Cluster(2, "--max-running", "1", "--max-queue", "1", model=slow)
    try:
        errs = []
        long_calls = []

        def long_client():
            try:
                generate(c.stub, "A long story", timeout=120, max_tokens=3000)
            except grpc.RpcError as e:
                errs.append(e)

        def wait_for(pred, what):
            deadline = time.time() + 30
            while time.time() < deadline and not pred(info(c.stub)):
                time.sleep(0.01)
            return check(pred(info(c.stub)), what)

        long_calls.append(threading.Thread(target=long_client))
        long_calls[-1].start()
        wait_for(lambda i: i.running_sequences == 1, "queue test: the first request runs")
        long_calls.append(threading.Thread(target=long_client))
        long_calls[-1].start()
        wait_for(lambda i: i.waiting_requests == 1, "queue test: the second one waits")
        expect_error("queue full", grpc.StatusCode.RESOURCE_EXHAUSTED,
                     lambda: generate(c.stub, "hi", max_tokens=4), "queue is full")
        # Stop a worker: the coordinator gives up after --worker-timeout-s and fails what is in flight.
        worker = c.pid_of("moe-worker")[0]
        os.kill(worker, signal.SIGSTOP)
        for t in long_calls:
            t.join(timeout=60)
        os.kill(worker, signal.SIGCONT)
        check(len(errs) == 2 and all(e.code() == grpc.StatusCode.UNAVAILABLE for e in errs),
              f"lost worker: requests in flight get UNAVAILABLE ({[e.details()[:80] for e in errs]})")
        try:
            rc = c.proc.wait(60)
        except subprocess.TimeoutExpired:
            rc = None
        check(rc not in (None, 0), f"lost worker: the job exits non-zero ({rc})")
    finally:
        c.kill()

    # A worker stopped while the server is idle, then SIGTERM: the shutdown cannot include it, so
    # the job is aborted within a bound, naming the rank, instead of waiting in MPI_Finalize for as
    # long as the worker stays stopped.
    c = Cluster(2, "--telemetry-interval-ms", "100", model=slow)
    worker = None
    try:
        generate(c.stub, "hi", max_tokens=4)
        health = c.channel.unary_unary("/grpc.health.v1.Health/Check", request_serializer=lambda b: b,
                                       response_deserializer=lambda b: b)
        worker = c.pid_of("moe-worker")[0]
        # A stopped worker's heartbeat stops: health NOT_SERVING, new requests fail at once.
        os.kill(worker, signal.SIGSTOP)
        t0 = time.time()
        while time.time() - t0 < 10 and health(b"") != b"\x08\x02":
            time.sleep(0.05)
        check(health(b"") == b"\x08\x02", f"stopped worker: health NOT_SERVING after {time.time() - t0:.1f} s")
        t1 = time.time()
        expect_error("stopped worker: a new request", grpc.StatusCode.UNAVAILABLE,
                     lambda: generate(c.stub, "hi", max_tokens=4), "heartbeat is lost")
        check(time.time() - t1 < 1, f"stopped worker: the refusal came in {time.time() - t1:.2f} s")
        os.kill(worker, signal.SIGCONT)
        t0 = time.time()
        while time.time() - t0 < 10 and health(b"") != b"\x08\x01":
            time.sleep(0.05)
        ids, _, _ = generate(c.stub, "hi", max_tokens=4, timeout=30)
        check(health(b"") == b"\x08\x01" and len(ids) == 4, "worker resumed: SERVING again, requests run")
        os.kill(worker, signal.SIGSTOP)
        t0 = time.time()
        for pid in c.pid_of("moe-coordinator"):
            os.kill(pid, signal.SIGTERM)
        try:
            rc = c.proc.wait(30)
        except subprocess.TimeoutExpired:
            rc = None
        took = time.time() - t0
        log = open(c.log.name).read()
        check(rc not in (None, 0) and took < 20 and "did not answer within" in log and "aborting the job" in log,
              f"stopped worker at shutdown: the job ends in {took:.1f} s with exit {rc}, naming the rank: "
              f"{[l for l in log.splitlines() if 'aborting the job' in l][:1]}")
    finally:
        if worker is not None:
            try:
                os.kill(worker, signal.SIGCONT)
            except ProcessLookupError:
                pass
        c.kill()

    # A worker killed (kill -9) while requests stream: its report stream closes with its process, so
    # every client gets UNAVAILABLE naming the rank at once, and the coordinator's log names it,
    # before mpirun ends the job (which used to leave clients with a bare 'Socket closed').
    c = Cluster(2, "--telemetry-interval-ms", "200", model=slow)
    try:
        failures = []

        def streaming_client():
            try:
                generate(c.stub, "A long story", timeout=60, max_tokens=3000)
                failures.append((time.time(), None))
            except grpc.RpcError as e:
                failures.append((time.time(), e))

        clients = [threading.Thread(target=streaming_client) for _ in range(4)]
        for t in clients:
            t.start()
        deadline = time.time() + 30
        while time.time() < deadline and info(c.stub).running_sequences < 4:
            time.sleep(0.01)
        worker = c.pid_of("moe-worker")[0]
        with open(f"/proc/{worker}/environ") as f:
            rank = next(v.split("=")[1] for v in f.read().split("\0") if v.startswith("OMPI_COMM_WORLD_RANK="))
        t0 = time.time()
        os.kill(worker, signal.SIGKILL)
        for t in clients:
            t.join(timeout=60)
        errors = [e for _, e in failures if e is not None]
        named = [e for e in errors if e.code() == grpc.StatusCode.UNAVAILABLE and f"worker rank {rank} is gone" in e.details()]
        took = max((at for at, _ in failures), default=t0) - t0
        check(len(failures) == 4 and len(named) == 4 and took < 1.0,
              f"kill -9 of worker rank {rank}: {len(named)}/4 streams got UNAVAILABLE naming it within {took:.2f} s "
              f"({errors[0].details()[:140] if errors else 'no error'!r})")
        try:
            rc = c.proc.wait(30)
        except subprocess.TimeoutExpired:
            rc = None
        log = open(c.log.name).read()
        line = next((l for l in log.splitlines() if "serving stopped:" in l), "")
        check(rc not in (None, 0) and f"worker rank {rank} is gone" in line,
              f"kill -9: the job exits {rc}; the coordinator's log names the rank: {line[:120]!r}")
    finally:
        c.kill()

    sys.exit(harness.finish())


if __name__ == "__main__":
    main()
