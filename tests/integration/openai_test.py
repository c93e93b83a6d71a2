"""The OpenAI-compatible HTTP API (--http-listen) of a real cluster (2 workers), driven by the
official `openai` Python package from PyPI (pinned in requirements-test.txt, installed into
.venv-test by scripts/install-python-deps.sh) and by curl:

- /v1/models lists the served model; /health answers;
- completions.create, whole and streamed, gives moe-generate's text for the same greedy request,
  with usage and finish_reason; a seeded sampled request gives the gRPC port's text for it, and
  with n = 3 each choice j the text for seed + j (streamed too, over 2 prompts);
- chat.completions.create, whole and streamed (role chunk, deltas, finish, usage chunk), gives the
  gRPC port's text for the prompt the Mixtral-Instruct template makes;
- 8 concurrent streams through the same scheduler each get their single-process text;
- errors in OpenAI's shape with the right status: unknown model 404 (model_not_found), bad
  fields 400 naming the param, an unknown path 404;
- curl: a whole response, an SSE stream ending in [DONE], an error status;
- vLLM's /tokenize, /detokenize and /version; a client's X-Request-Id echoed and naming the
  response; /metrics on the API port with vLLM's histograms and the process collector, and
  counters (steps, tokens, expert and worker loads, labels) that ResetLoad leaves;
- on a cluster of its own with ~2 ms steps: SSE chunks a step apart, and a client that
  disconnects (streamed or not) has its request cancelled: no sequence running and no KV cache
  held within a second, well short of its 900 tokens (its label's count); SIGINT to serve.sh
  mid-stream ends the stream with [DONE] and serve.sh with 0.

usage: openai_test.py BIN_DIR SOURCE_DIR WORK_DIR PYTHON_STUBS_DIR   (runs itself under .venv-test)
"""
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

BIN, SRC, WORK, STUBS = sys.argv[1:5]
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_venv import reexec_under_test_venv  # noqa: E402

reexec_under_test_venv(SRC)

import openai  # noqa: E402

sys.path.insert(0, STUBS)
from harness import Harness, generate  # noqa: E402
from moe.v1 import inference_pb2 as pb  # noqa: E402
from moe.v1 import telemetry_pb2 as tpb  # noqa: E402
from moe.v1 import telemetry_pb2_grpc as tpbg  # noqa: E402
from streams import BATCH_INVARIANT  # noqa: E402

MODEL = os.path.join(WORK, "model")
h = Harness(BIN, SRC, WORK)
check = h.check


def reference_text(prompt, max_tokens):
    out = h.run([os.path.join(BIN, "moe-generate"), "--model", MODEL, "--prompt", prompt, "--max-tokens",
                 str(max_tokens), "--threads", "1"])
    return out[:-1] if out.endswith("\n") else out  # moe-generate prints the continuation and a newline


def info(stub):
    return stub.GetModelInfo(pb.GetModelInfoRequest())


def raw_post(port, path, body):
    """A client that sends a request and can vanish: the socket, after the request is written."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    data = json.dumps(body).encode()
    s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
    return s


def curl(*args):
    p = subprocess.run(["curl", "-sS", "--max-time", "60", "-w", "\n%{http_code}", *args], capture_output=True,
                       text=True, env=dict(os.environ, no_proxy="*"))
    body, _, code = p.stdout.rpartition("\n")
    return int(code or 0), body


def clients_that_leave(c, port, prompt):
    """A client that disconnects (streamed or not) has its request cancelled: no sequence running
    and no KV cache held within a second, well short of its 900 tokens (its label's count). On
    the cluster with ~2 ms steps: on a fast machine the main cluster's model runs all 900 in
    ~0.3 s, before a client's disconnect can be seen."""
    for stream in (True, False):
        label = f"leaves-{'streaming' if stream else 'whole'}"
        s = raw_post(port, "/v1/completions", {"prompt": prompt, "max_tokens": 900, "temperature": 0,
                                                "stream": stream, "label": label})
        if stream:
            got_data = b""
            while b"data: " not in got_data:
                got_data += s.recv(4096)
        else:
            deadline = time.time() + 20
            while info(c.stub).running_sequences != 1 and time.time() < deadline:
                time.sleep(0.002)
        t0 = time.time()
        s.close()
        h.wait_idle(c.stub, f"a {'streaming' if stream else 'non-streaming'} client disconnects mid-generation",
                    timeout=2.0)
        labels = {l.label: l for l in tpbg.TelemetryStub(c.channel).GetLoad(tpb.GetLoadRequest()).labels}
        left = labels.get(label)
        check(time.time() - t0 < 2.0 and left is not None and left.generated_tokens < 450,
              f"cancelled well before its 900 tokens would have finished "
              f"({left.generated_tokens if left else '?'} generated)")


def sse_gaps():
    """Each token's chunk leaves as its step ends (no buffering, no compression): a lone stream's
    chunks arrive spread out, not in clumps. As telemetry_test's gRPC check: on a cluster of its
    own, one worker and a model whose decode step takes about 2 ms (on 2 cores shared with the
    ranks a client falls behind 0.3 ms steps by itself), read off the socket with nothing else to
    do. A descheduled client can still clump one stream, so up to three are tried."""
    model = os.path.join(WORK, "stream-model")
    h.make_model(model, seed=6, hidden=512, intermediate=1024, layers=4, heads=8, experts=4)
    port_file = os.path.join(WORK, "stream-http-port")
    c = h.cluster(1, "--http-listen", "127.0.0.1:0", "--http-port-file", port_file, model=model)
    try:
        port = int(h.wait_for(lambda: os.path.exists(port_file) and open(port_file).read().strip(), "the port"))
        tries = []
        for _ in range(3):
            s = raw_post(port, "/v1/completions", {"prompt": "Streaming, one token at a time", "max_tokens": 96,
                                                    "temperature": 0, "stream": True})
            arrivals, data = [], b""
            while b"[DONE]" not in data:
                got = s.recv(65536)
                if not got:
                    break
                data += got
                # Each chunk with text that this read brought, all at this moment.
                arrivals += [time.perf_counter()] * (got.count(b'"text":"') - got.count(b'"text":""'))
            s.close()
            gaps = sorted(b - a for a, b in zip(arrivals, arrivals[1:]))
            clumped = sum(g < 1e-4 for g in gaps) / max(1, len(gaps))
            tries.append(f"{len(arrivals)} chunks, median gap {1e3 * gaps[len(gaps) // 2]:.2f} ms, "
                         f"{100 * clumped:.0f}% under 0.1 ms")
            if len(arrivals) >= 80 and clumped < 0.25:
                break
        check(len(arrivals) >= 80 and clumped < 0.25, f"SSE chunks arrive a step apart: {'; '.join(tries)}")
        clients_that_leave(c, port, "A client that will not wait for the end")
    finally:
        c.stop()


def main():
    import shutil
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    h.make_model(MODEL, seed=5, experts=4)
    http_port_file = os.path.join(WORK, "http-port")
    c = h.cluster(2, "--http-listen", "127.0.0.1:0", "--http-port-file", http_port_file, model=MODEL)
    try:
        port = int(h.wait_for(lambda: os.path.exists(http_port_file) and open(http_port_file).read().strip(),
                              "the HTTP port file"))
        base = f"http://127.0.0.1:{port}/v1"
        log = open(c.log.name).read()
        check(f"OpenAI-compatible API on http://127.0.0.1:{port}/v1 (model \"model\", chat template mistral-v1)" in log,
              "the start-up line names the HTTP API, the model and the chat template")
        client = openai.OpenAI(base_url=base, api_key="unused", max_retries=0, timeout=120)

        models = [m.id for m in client.models.list()]
        check(models == ["model"], f"models.list(): {models}")
        code, body = curl(f"http://127.0.0.1:{port}/health")
        check(code == 200 and json.loads(body) == {"status": "ok"}, f"GET /health: {code} {body}")

        # Completions: greedy equals the single process; streamed equals whole.
        prompt = "The quick brown fox"
        want = reference_text(prompt, 12)
        r = client.completions.create(model="model", prompt=prompt, max_tokens=12, temperature=0)
        check(r.choices[0].text == want and r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 12
              and r.usage.prompt_tokens == 6 and r.usage.total_tokens == 18 and r.id.startswith("cmpl-")
              and r.object == "text_completion",
              f"completions.create: {r.choices[0].text!r} == moe-generate's, usage {r.usage.prompt_tokens}+"
              f"{r.usage.completion_tokens}, {r.choices[0].finish_reason}, {r.id}")
        chunks = list(client.completions.create(model="model", prompt=prompt, max_tokens=12, temperature=0,
                                                stream=True, stream_options={"include_usage": True}))
        text = "".join(ch.choices[0].text for ch in chunks if ch.choices)
        finishes = [ch.choices[0].finish_reason for ch in chunks if ch.choices]
        check(text == want and finishes[-1] == "length" and all(f is None for f in finishes[:-1])
              and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 12
              and len({ch.id for ch in chunks}) == 1,
              f"completions.create(stream=True): {len(chunks)} chunks, the same text, finish last, usage last")


        # Seeded sampling: the HTTP port and the gRPC port give the same text for the same settings.
        sampled = dict(max_tokens=16, temperature=0.9, top_p=0.95, seed=77)
        r1 = client.completions.create(model="model", prompt=prompt, **sampled)
        r2 = client.completions.create(model="model", prompt=prompt, **sampled)
        _, grpc_text, _ = generate(c.stub, prompt, timeout=60, **sampled)
        check(r1.choices[0].text == r2.choices[0].text == grpc_text,
              f"a seeded sampled completion repeats and equals the gRPC port's: {grpc_text!r}")
        # n: choice j samples with seed + j, so each is the gRPC port's text for that seed; the
        # prompt counts once in the usage. Streamed, each choice's chunks carry its index.
        several = client.completions.create(model="model", prompt=prompt, n=3, **sampled)
        grpc_n = [generate(c.stub, prompt, timeout=60, **dict(sampled, seed=77 + j)) for j in range(3)]
        want_n = [text for _, text, _ in grpc_n]
        check([ch.index for ch in several.choices] == [0, 1, 2] and [ch.text for ch in several.choices] == want_n
              and len(set(want_n)) > 1 and several.usage.prompt_tokens == r1.usage.prompt_tokens
              and several.usage.completion_tokens == sum(len(ids) for ids, _, _ in grpc_n),
              f"n=3: choices 0..2, the gRPC port's texts for seeds 77, 78, 79, the prompt counted once "
              f"({several.usage})")
        streamed = {}
        for ch in client.completions.create(model="model", prompt=[prompt, prompt], n=2, stream=True, **sampled):
            for choice in ch.choices:
                streamed[choice.index] = streamed.get(choice.index, "") + choice.text
        check(streamed == {0: want_n[0], 1: want_n[1], 2: want_n[0], 3: want_n[1]},
              "2 prompts x n=2, streamed: choices indexed prompt * n + j, each its seed's text")
        chat_n = client.chat.completions.create(model="model", messages=[{"role": "user", "content": "Hi"}], n=2,
                                                max_tokens=6, temperature=0)
        check(len(chat_n.choices) == 2 and chat_n.choices[0].message.content == chat_n.choices[1].message.content,
              "chat n=2 at temperature 0: two choices, the same greedy text")
        tk = client.completions.create(model="model", prompt=prompt, max_tokens=8, temperature=0.8, seed=3,
                                       extra_body={"top_k": 1})
        check(tk.choices[0].text == reference_text(prompt, 8), "top_k (an extension) = 1 is greedy")

        # Chat: the prompt the Mixtral-Instruct template makes, through the gRPC port, gives the same text.
        messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Who are you?"}]
        span = list(c.stub.Tokenize(pb.TokenizeRequest(text=b" [INST] Be brief.\n\nWho are you? [/INST]",
                                                       add_bos=False)).ids)
        chat_ids = [1] + span
        _, chat_want, _ = generate(c.stub, chat_ids, timeout=60, max_tokens=10)
        r = client.chat.completions.create(model="model", messages=messages, max_tokens=10, temperature=0)
        m = r.choices[0].message
        check(m.role == "assistant" and m.content == chat_want and r.usage.prompt_tokens == len(chat_ids)
              and r.object == "chat.completion" and r.id.startswith("chatcmpl-"),
              f"chat.completions.create: {m.content!r} == the gRPC port's for the template's {len(chat_ids)} ids")
        chunks = list(client.chat.completions.create(model="model", messages=messages, max_tokens=10, temperature=0,
                                                     stream=True, stream_options={"include_usage": True}))
        deltas = [ch.choices[0].delta for ch in chunks if ch.choices]
        text = "".join(d.content or "" for d in deltas)
        check(deltas[0].role == "assistant" and text == chat_want
              and [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "length"
              and chunks[-1].usage.prompt_tokens == len(chat_ids) and chunks[-1].object == "chat.completion.chunk",
              f"chat.completions.create(stream=True): role first, {len(deltas)} deltas, the same text, usage last")

        # 8 concurrent streams share the scheduler; each gets its single-process text.
        prompts = [f"Client {i} asks about {t}" for i, t in enumerate(
            ["rivers", "the moon", "bread", "trains", "music", "stars", "winter", "gardens"])]
        wants = [reference_text(p, 20 + i) for i, p in enumerate(prompts)]
        got = [None] * len(prompts)

        def one(i):
            s = client.completions.create(model="model", prompt=prompts[i], max_tokens=20 + i, temperature=0,
                                          stream=True)
            got[i] = "".join(ch.choices[0].text for ch in s if ch.choices)
        threads = [threading.Thread(target=one, args=(i,)) for i in range(len(prompts))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if BATCH_INVARIANT:
            check(got == wants, f"8 concurrent streams: each equals moe-generate's text alone "
                                f"({sum(g == w for g, w in zip(got, wants))}/8)")
        else:
            check(all(g for g in got), "8 concurrent streams all finished (this CPU lacks the batch-invariant "
                                       "kernels' AVX-512, so texts may differ at near ties)")

        # Errors in OpenAI's shape.
        def error_of(fn):
            try:
                fn()
                return None
            except openai.APIStatusError as e:
                return e
        e = error_of(lambda: client.completions.create(model="gpt-4", prompt="a", max_tokens=2))
        check(isinstance(e, openai.NotFoundError) and e.body.get("code") == "model_not_found"
              and e.body.get("param") == "model", f"an unknown model: {type(e).__name__} {e.body if e else None}")
        e = error_of(lambda: client.completions.create(model="model", prompt="a", max_tokens=0))
        check(isinstance(e, openai.BadRequestError) and "max_tokens must be >= 1" in e.body.get("message", "")
              and e.body.get("type") == "invalid_request_error", f"max_tokens 0: {type(e).__name__} {e.body if e else None}")
        e = error_of(lambda: client.completions.create(model="model", prompt=["a"] * 8, max_tokens=2, n=9))
        check(isinstance(e, openai.BadRequestError) and e.body.get("param") == "n",
              f"8 prompts x n=9 > 64 choices: {e.body if e else None}")
        e = error_of(lambda: client.chat.completions.create(model="model", max_tokens=2, messages=[
            {"role": "assistant", "content": "first"}]))
        check(isinstance(e, openai.BadRequestError) and e.body.get("param") == "messages",
              f"a chat that does not start with the user: {e.body if e else None}")
        e = error_of(lambda: client.completions.create(model="model", prompt="a", max_tokens=2000))
        check(isinstance(e, openai.BadRequestError) and "exceeds" in e.body.get("message", ""),
              f"prompt + max_tokens past the context: {e.body.get('message') if e else None}")

        # curl, as the README shows it.
        code, body = curl(f"{base}/completions", "-H", "Content-Type: application/json", "-d",
                          json.dumps({"model": "model", "prompt": prompt, "max_tokens": 12, "temperature": 0}))
        check(code == 200 and json.loads(body)["choices"][0]["text"] == want, f"curl /v1/completions: {code}")
        code, body = curl("-N", f"{base}/chat/completions", "-d", json.dumps(
            {"model": "model", "messages": messages, "max_tokens": 10, "temperature": 0, "stream": True}))
        events = [line[len("data: "):] for line in body.splitlines() if line.startswith("data: ")]
        streamed = "".join(json.loads(ev)["choices"][0]["delta"].get("content", "") for ev in events[:-1])
        check(code == 200 and events[-1] == "[DONE]" and streamed == chat_want,
              f"curl -N /v1/chat/completions (SSE): {len(events)} events, [DONE] last, the same text")
        code, body = curl(f"{base}/completions", "-d", '{"prompt": "a", "temperature": -1}')
        check(code == 400 and json.loads(body)["error"]["message"] == "temperature must be >= 0, got -1",
              f"curl, a bad field: {code} {body}")
        code, body = curl(f"{base}/embeddings", "-d", "{}")
        check(code == 404 and "no such endpoint" in json.loads(body)["error"]["message"], f"curl, no such endpoint: {code}")
        code, body = curl(f"{base}/completions", "-d", "{\"prompt\": ")
        check(code == 400 and "not valid JSON" in body, f"curl, a truncated body: {code} {body}")

        # vLLM's tokenizer endpoints and /version; a client's X-Request-Id names its response.
        root = f"http://127.0.0.1:{port}"
        code, body = curl(f"{root}/tokenize", "-d", json.dumps({"prompt": prompt}))
        ids = json.loads(body)["tokens"] if code == 200 else None
        want_ids = list(c.stub.Tokenize(pb.TokenizeRequest(text=prompt.encode(), add_bos=True)).ids)
        check(ids == want_ids and json.loads(body)["count"] == len(want_ids), f"POST /tokenize: {code} {body}")
        code, body = curl(f"{root}/detokenize", "-d", json.dumps({"tokens": want_ids}))
        check(code == 200 and json.loads(body) == {"prompt": prompt}, f"POST /detokenize: {code} {body}")
        code, body = curl(f"{root}/version")
        check(code == 200 and json.loads(body)["version"].count(".") == 2, f"GET /version: {code} {body}")
        req = urllib.request.Request(f"{base}/completions", headers={"Content-Type": "application/json",
                                                                     "X-Request-Id": "eval-7"},
                                     data=json.dumps({"prompt": prompt, "max_tokens": 2}).encode())
        with urllib.request.urlopen(req, timeout=60) as r:
            rid, out = r.headers.get("X-Request-Id"), json.load(r)
        check(rid == "eval-7" and out["id"] == "cmpl-eval-7", f"X-Request-Id: echoed ({rid}), the response's id "
              f"{out['id']}")

        # Prometheus on the API port: vLLM's histograms, the process, counters that ResetLoad leaves.
        def scrape():
            code, body = curl(f"{root}/metrics")
            samples = {}
            for line in body.splitlines() if code == 200 else []:
                if line and not line.startswith("#"):
                    name, _, value = line.rpartition(" ")
                    samples[name] = float(value)
            return samples
        before = scrape()
        families = ["moe_inter_token_latency_seconds_count", "moe_request_queue_time_seconds_count",
                "moe_request_prefill_time_seconds_count", "moe_request_decode_time_seconds_count",
                "moe_request_prompt_tokens_count", "moe_request_generation_tokens_count",
                "process_resident_memory_bytes", "moe_steps_total", "moe_tokens_total"]
        check(all(before.get(k, 0) > 0 for k in families) and before.get('moe_build_info{version="0.1.0"}') == 1
              and before.get('moe_time_to_first_token_seconds_bucket{le="0.001"}') is not None,
              f"GET /metrics on the API port: {', '.join(f'{k} {before.get(k)}' for k in families)}")
        tpbg.TelemetryStub(c.channel).ResetLoad(tpb.ResetLoadRequest())
        after = scrape()
        def total(samples, family):
            return sum(v for k, v in samples.items() if k.startswith(family + "{"))
        load_counters = ["moe_expert_tokens_total", "moe_worker_routed_tokens_total", "moe_label_requests_total",
                         "moe_locality_pairs_total"]
        check(after.get("moe_steps_total", 0) >= before["moe_steps_total"] > 0
              and after.get("moe_tokens_total", 0) >= before["moe_tokens_total"]
              and all(total(after, f) >= total(before, f) > 0 for f in load_counters),
              f"ResetLoad leaves every counter: steps {before.get('moe_steps_total')} -> "
              f"{after.get('moe_steps_total')}, " + ", ".join(f"{f} {total(before, f)} -> {total(after, f)}"
                                                             for f in load_counters))

        # The server still serves after all of that.
        r = client.completions.create(model="model", prompt=prompt, max_tokens=12, temperature=0)
        check(r.choices[0].text == want, f"the server serves as before after the errors and disconnects "
              f"({r.choices[0].text!r})")
        t0 = time.time()
        check(c.stop() == 0, f"SIGTERM: the job exits 0 ({time.time() - t0:.1f} s)")
    finally:
        c.kill()
    sse_gaps()
    serve_sh_interrupted()
    sys.exit(h.finish())


def serve_sh_interrupted():
    """SIGINT to scripts/serve.sh's own PID (where a terminal's Ctrl-C lands: serve.sh execs
    launch.sh, and mpirun runs in a session of its own) while a stream runs: the coordinator drains,
    the stream ends with [DONE], and serve.sh exits 0."""
    from harness import kill_job
    port_file = os.path.join(WORK, "serve-http-port")
    log_path = os.path.join(WORK, "serve-sh.log")
    with open(log_path, "w") as log:
        p = subprocess.Popen([os.path.join(SRC, "scripts/serve.sh"), "--model", MODEL, "--workers", "2", "--listen",
                              "127.0.0.1:0", "--http", "127.0.0.1:0", "--", "--http-port-file", port_file],
                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                             env=dict(os.environ, BUILD_DIR=os.path.dirname(BIN)))
    try:
        port = int(h.wait_for(lambda: os.path.exists(port_file) and open(port_file).read().strip(),
                              "serve.sh's HTTP port file", timeout=60) or 0)
        if not port:
            return
        s = raw_post(port, "/v1/completions", {"prompt": "The quick brown fox", "max_tokens": 400,
                                               "temperature": 0, "stream": True})
        got = b""
        while b"data: " not in got:
            got += s.recv(4096)
        os.kill(p.pid, signal.SIGINT)
        t0 = time.time()
        s.settimeout(60)
        while True:
            data = s.recv(65536)
            if not data:
                break
            got += data
        s.close()
        rc = p.wait(60)
        tail = got.rstrip()[-40:]
        check(rc == 0 and b"data: [DONE]" in got[-60:],
              f"SIGINT to serve.sh mid-stream: the stream ends with [DONE] ({tail!r}), serve.sh exits {rc} "
              f"{time.time() - t0:.1f} s later")
        log = open(log_path).read()
        check("server stopped" in log, "serve.sh's log has the coordinator's graceful stop line")
    except (OSError, subprocess.TimeoutExpired) as e:
        check(False, f"SIGINT to serve.sh mid-stream: {type(e).__name__}: {e}; log: {open(log_path).read()[-400:]}")
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        kill_job(MODEL)


if __name__ == "__main__":
    main()
