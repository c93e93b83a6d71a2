"""The OpenAI-compatible HTTP API (--http-listen) of a real cluster (2 workers), driven by the
official `openai` Python package from PyPI (pinned in requirements-test.txt, installed into
.venv-test by scripts/install-python-deps.sh) and by curl:

- /v1/models lists the served model; /health answers;
- completions.create, whole and streamed, gives moe-generate's text for the same greedy request,
  with usage and finish_reason; a seeded sampled request gives the gRPC port's text for it;
- chat.completions.create, whole and streamed (role chunk, deltas, finish, usage chunk), gives the
  gRPC port's text for the prompt the Mixtral-Instruct template makes;
- 8 concurrent streams through the same scheduler each get their single-process text;
- errors in OpenAI's shape with the right status: unknown model 404 (model_not_found), bad
  fields 400 naming the param, an unknown path 404;
- a client that disconnects (streamed or not) has its request cancelled: no sequence running and
  no KV cache held within a second;
- curl: a whole response, an SSE stream ending in [DONE], an error status.

usage: openai_test.py BIN_DIR SOURCE_DIR WORK_DIR PYTHON_STUBS_DIR   (runs itself under .venv-test)
"""
import json
import os
import socket
import subprocess
import sys
import threading
import time

BIN, SRC, WORK, STUBS = sys.argv[1:5]
VENV = os.environ.get("MOE_TEST_VENV", os.path.join(SRC, ".venv-test"))
VENV_PY = os.path.join(VENV, "bin", "python")
if os.path.realpath(sys.prefix) != os.path.realpath(VENV):
    if not os.path.exists(VENV_PY):
        print(f"FAIL: {VENV_PY} is missing: run scripts/install-python-deps.sh (the test's PyPI packages)")
        sys.exit(1)
    os.execv(VENV_PY, [VENV_PY] + sys.argv)

import openai  # noqa: E402

sys.path.insert(0, STUBS)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Harness, generate  # noqa: E402
from moe.v1 import inference_pb2 as pb  # noqa: E402
from streams import BATCH_INVARIANT  # noqa: E402

MODEL = os.path.join(WORK, "model")
h = Harness(BIN, SRC, WORK)
check = h.check


def reference_text(prompt, max_tokens):
    out = h.run([os.path.join(BIN, "moe-generate"), "--model", MODEL, "--prompt", prompt, "--max-new-tokens",
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

        # Each token's chunk leaves as its step ends (no buffering, no compression): a lone stream's
        # chunks arrive spread out, not in clumps. Up to three streams: a descheduled client can
        # clump one by itself.
        tries = []
        for _ in range(3):
            arrivals = [time.perf_counter() for ch in client.completions.create(
                model="model", prompt=prompt, max_tokens=96, temperature=0, stream=True) if ch.choices and ch.choices[0].text]
            gaps = sorted(b - a for a, b in zip(arrivals, arrivals[1:]))
            clumped = sum(g < 1e-4 for g in gaps) / max(1, len(gaps))
            tries.append(f"{len(arrivals)} chunks, median gap {1e3 * gaps[len(gaps) // 2]:.2f} ms, "
                         f"{100 * clumped:.0f}% under 0.1 ms")
            if len(arrivals) >= 80 and clumped < 0.25:
                break
        check(len(arrivals) >= 80 and clumped < 0.25, f"SSE chunks arrive a step apart: {'; '.join(tries)}")

        # Seeded sampling: the HTTP port and the gRPC port give the same text for the same settings.
        sampled = dict(max_tokens=16, temperature=0.9, top_p=0.95, seed=77)
        r1 = client.completions.create(model="model", prompt=prompt, **sampled)
        r2 = client.completions.create(model="model", prompt=prompt, **sampled)
        _, grpc_text, _ = generate(c.stub, prompt, timeout=60, **sampled)
        check(r1.choices[0].text == r2.choices[0].text == grpc_text,
              f"a seeded sampled completion repeats and equals the gRPC port's: {grpc_text!r}")
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
        e = error_of(lambda: client.completions.create(model="model", prompt="a", max_tokens=2, n=2))
        check(isinstance(e, openai.BadRequestError) and e.body.get("param") == "n", f"n=2: {e.body if e else None}")
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

        # Clients that leave: their requests stop and free the KV cache.
        for stream in (True, False):
            s = raw_post(port, "/v1/completions", {"prompt": prompt, "max_tokens": 900, "temperature": 0,
                                                    "stream": stream})
            if stream:
                got_data = b""
                while b"data: " not in got_data:
                    got_data += s.recv(4096)
            else:
                h.wait_for(lambda: info(c.stub).running_sequences == 1, "the whole request running")
            t0 = time.time()
            s.close()
            h.wait_idle(c.stub, f"a {'streaming' if stream else 'non-streaming'} client disconnects mid-generation",
                        timeout=2.0)
            check(time.time() - t0 < 2.0, "cancelled well before its 900 tokens would have finished")

        # The server still serves after all of that.
        r = client.completions.create(model="model", prompt=prompt, max_tokens=12, temperature=0)
        check(r.choices[0].text == want, "the server serves as before after the errors and disconnects")
        t0 = time.time()
        check(c.stop() == 0, f"SIGTERM: the job exits 0 ({time.time() - t0:.1f} s)")
    finally:
        c.kill()
    sys.exit(h.finish())


if __name__ == "__main__":
    main()
