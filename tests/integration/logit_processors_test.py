"""Penalties, min_tokens, stop_token_ids and ignore_eos through a real cluster (2 workers), token for
token against a reference written from their definitions: each step's logits from moe-logits (the
single-process logits dump; the cluster's are the same bits), processed in float32 as Hugging Face
(repetition_penalty), OpenAI (frequency_penalty, presence_penalty) and vLLM (min_tokens,
stop_token_ids, ignore_eos) define them, then the argmax.

- over gRPC (moe.v1.SamplingParams) and over the OpenAI HTTP API (the same names in the body);
- every case differs from plain greedy decoding, so a processor that did nothing would fail;
- stop_token_ids end with finish reason stop, the token counted and its text not returned;
- ignore_eos: a copy of the model whose config makes a token the greedy run produces an EOS; with
  ignore_eos the run goes on to max_tokens with the original model's tokens.

usage: logit_processors_test.py BIN_DIR SOURCE_DIR WORK_DIR PYTHON_STUBS_DIR
Prints "N passed, M failed" and exits non-zero on any failure.
"""
import json
import os
import shutil
import sys
import urllib.request

import numpy as np

BIN, SRC, WORK, STUBS = sys.argv[1:5]
sys.path.insert(0, STUBS)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Harness, generate  # noqa: E402
from moe.v1 import inference_pb2 as pb  # noqa: E402

# The project's trained model: code it has learned repeats itself, so the penalties have work.
MODEL = os.path.join(SRC, "deploy/models/pystd")
EOS_MODEL = os.path.join(WORK, "model-eos")
PROMPT_TEXT = "import os\nimport sys\n\n\ndef main(args):\n    "
PROMPT = []  # its token ids, from the server
MAX_TOKENS = 14
h = Harness(BIN, SRC, WORK)
check = h.check
_calls = [0]


def last_logits(sequences):
    """The logits after each of `sequences`, from the single-process dump (run as one batch: each
    row is what the sequence alone gives)."""
    out = os.path.join(WORK, "logits.npy")
    h.run([os.path.join(BIN, "moe-logits"), "--model", MODEL, "--tokens",
           ";".join(",".join(map(str, ids)) for ids in sequences), "--out", out, "--threads", "1"])
    _calls[0] += 1
    rows = np.load(out)
    return [rows[end].astype(np.float32) for end in np.cumsum([len(ids) for ids in sequences]) - 1]


def next_token(x, out, repetition_penalty=1.0, frequency_penalty=0.0, presence_penalty=0.0, min_tokens=0,
               stop_token_ids=(), ignore_eos=False, eos=(2,)):
    """The greedy token after processing logits x as defined, in the sampler's float32 arithmetic,
    and why the sequence ends with it ("" if it goes on)."""
    rp, fp, pp = np.float32(repetition_penalty), np.float32(frequency_penalty), np.float32(presence_penalty)
    if rp != 1:
        for t in set(PROMPT) | set(out):  # Hugging Face: each token seen, once
            x[t] = x[t] / rp if x[t] > 0 else x[t] * rp
    counts = {}
    for t in out:
        counts[t] = counts.get(t, 0) + 1
    for t, c in counts.items():  # OpenAI: over the output
        x[t] = x[t] - (np.float32(c) * fp + pp)
    if len(out) < min_tokens:  # vLLM: nothing that ends the sequence before min_tokens
        for t in list(stop_token_ids) + ([] if ignore_eos else list(eos)):
            x[t] = -np.inf
    t = int(np.argmax(x))
    if t in stop_token_ids:
        return t, "stop"
    if t in eos and not ignore_eos:
        return t, "eos"
    return t, "length" if len(out) + 1 == MAX_TOKENS else ""


def references(*cases):
    """Greedy decoding of each case (next_token's keyword arguments), all cases a step at a time:
    [(token ids, finish reason)]."""
    outs, ends = [[] for _ in cases], [""] * len(cases)
    while not all(ends):
        going = [i for i, end in enumerate(ends) if not end]
        for i, x in zip(going, last_logits([PROMPT + outs[i] for i in going])):
            t, ends[i] = next_token(x, outs[i], **cases[i])
            outs[i].append(t)
    return list(zip(outs, ends))


def reference(**case):
    return references(case)[0]


FINISH = {pb.FINISH_REASON_EOS: "eos", pb.FINISH_REASON_LENGTH: "length", pb.FINISH_REASON_STOP: "stop"}


def served(stub, max_tokens=MAX_TOKENS, **fields):
    ids, text, last = generate(stub, PROMPT, timeout=120, max_tokens=max_tokens, **fields)
    return ids, FINISH.get(last.finish_reason), text, last.usage.generated_tokens


def http_completion(port, **fields):
    body = dict(prompt=PROMPT, max_tokens=MAX_TOKENS, temperature=0, **fields)
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        out = json.load(r)
    choice = out["choices"][0]
    return choice["text"], choice["finish_reason"], out["usage"]["completion_tokens"]


def main():
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    port_file = os.path.join(WORK, "http-port")
    c = h.cluster(2, "--http-listen", "127.0.0.1:0", "--http-port-file", port_file, model=MODEL)
    try:
        stub = c.stub
        PROMPT.extend(stub.Tokenize(pb.TokenizeRequest(text=PROMPT_TEXT.encode(), add_bos=True)).ids)
        plain, why = reference()
        check(len(set(plain)) < len(plain), f"plain greedy repeats tokens ({plain}, {why}): the penalties have work")
        cases = {
            "repetition_penalty 1.5": dict(repetition_penalty=1.5),
            "repetition_penalty 0.7": dict(repetition_penalty=0.7),
            "frequency 1.0 + presence 0.5": dict(frequency_penalty=1.0, presence_penalty=0.5),
            "frequency -0.5 + presence 1.5": dict(frequency_penalty=-0.5, presence_penalty=1.5),
            "all three": dict(repetition_penalty=1.2, frequency_penalty=0.3, presence_penalty=0.4),
            "stop_token_ids": dict(stop_token_ids=[plain[3]]),
            "min_tokens 6 + stop_token_ids": dict(min_tokens=6, stop_token_ids=[plain[1], plain[2]]),
        }
        wants = dict(zip(cases, references(*cases.values())))
        for name, (ids, why) in wants.items():
            check(ids != plain, f"reference '{name}' differs from plain greedy: {ids} ({why})")
        port = int(h.wait_for(lambda: os.path.exists(port_file) and open(port_file).read().strip(), "HTTP port"))
        ids, why, _, _ = served(stub)
        check((ids, why) == (plain, "length"), f"plain greedy: the cluster {ids} equals the reference")
        for name, fields in cases.items():
            want_ids, want_why = wants[name]
            ids, why, text, generated = served(stub, **fields)
            check((ids, why) == (want_ids, want_why) and generated == len(ids),
                  f"gRPC {name}: {len(ids)} tokens, finish {why}, equal to the reference token for token")
            if name == "stop_token_ids":
                _, _, before, _ = served(stub, max_tokens=len(ids) - 1)
                check(text == before, f"gRPC {name}: the stop token is counted, its text not returned "
                      f"({text!r} == {before!r})")
            text_http, why_http, generated_http = http_completion(port, **fields)
            check(why_http == ("length" if want_why == "length" else "stop") and generated_http == len(want_ids)
                  and text_http == text,
                  f"HTTP {name}: finish {why_http}, {generated_http} tokens, the gRPC text")
    finally:
        check(c.stop() == 0, "SIGTERM: the cluster exits 0")

    # ignore_eos: the model's own greedy token plain[4] made an EOS by its config.
    shutil.copytree(MODEL, EOS_MODEL)
    config_path = os.path.join(EOS_MODEL, "config.json")
    config = json.load(open(config_path))
    config["eos_token_id"] = [2, plain[4]]
    json.dump(config, open(config_path, "w"))
    c = h.cluster(2, model=EOS_MODEL)
    try:
        ids, why, _, _ = served(c.stub)
        check((ids, why) == (plain[:5], "eos"), f"a model whose EOS includes {plain[4]}: ends there ({ids}, {why})")
        ids, why, text, generated = served(c.stub, ignore_eos=True)
        check((ids, why) == (plain, "length") and generated == MAX_TOKENS,
              f"ignore_eos: runs to max_tokens through the EOS, the original model's {MAX_TOKENS} tokens")
        ids, why, _, _ = served(c.stub, min_tokens=8)
        want, want_why = reference(min_tokens=8, eos=(2, plain[4]))
        check((ids, why) == (want, want_why) and len(ids) >= 8,
              f"min_tokens 8 on that model: no EOS before 8 tokens ({len(ids)}, {why}), as the reference")
    finally:
        check(c.stop() == 0, "SIGTERM: the cluster exits 0")
    print(f"({_calls[0]} reference steps)")


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # a harness failure (a command that failed): reported as a failed check
        check(False, f"{type(e).__name__}: {e}")
    sys.exit(h.finish())
