"""Log-probabilities, echo and batched prompts through the OpenAI HTTP API of a real cluster (2
workers, --cpu-numerics f32), held to a reference: log_softmax, in float64, of the single-process
logits dump (moe-logits) of the same tokens.

- lm-eval-harness's log-likelihood request (`local-completions`: token-id prompts, batch of 4,
  echo, logprobs 1, max_tokens 1, temperature 0): 4 choices indexed in order; each echoed prompt's
  first token has no log-probability, every other prompt token's and the generated token's equal
  the reference within 1e-5, and the most likely alternative is the argmax (lm-eval's is_greedy);
- the same prompt alone and among the batch gets the same log-probabilities, bit for bit;
- generated tokens' log-probabilities (logprobs 5) and their top 5 equal the reference within 1e-4
  (decoded with the KV cache, against a prefill of the same tokens), and a
  chat's (logprobs, top_logprobs 3) are the same numbers in chat's shape;
- echo without logprobs returns the prompt's text first; several prompts stream as their own
  choices, each with the text it gets alone, then [DONE].

usage: logprobs_test.py BIN_DIR SOURCE_DIR WORK_DIR PYTHON_STUBS_DIR
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
from harness import Harness  # noqa: E402
from moe.v1 import inference_pb2 as pb  # noqa: E402

MODEL = os.path.join(SRC, "deploy/models/pystd")
TEXTS = ["import os\nimport sys\n", "def add(a, b):\n    return a + b\n", "for i in range(10):\n    print(i)",
         "class Point:\n    def __init__(self, x, y):\n        self.x = x"]
TOLERANCE = 1e-5  # the prompt's: the same prefill, only float64 vs our log_softmax's rounding apart
DECODE_TOLERANCE = 1e-4  # generated tokens': decoded, against a prefill of the same tokens
h = Harness(BIN, SRC, WORK)
check = h.check


def reference_logprobs(ids):
    """[len(ids), vocab] float64 log_softmax of the single-process logits after each token."""
    out = os.path.join(WORK, "logits.npy")
    h.run([os.path.join(BIN, "moe-logits"), "--model", MODEL, "--tokens", ",".join(map(str, ids)), "--out", out,
           "--cpu-numerics", "f32"])
    x = np.load(out).astype(np.float64)
    m = x.max(axis=1, keepdims=True)
    return x - (m + np.log(np.exp(x - m).sum(axis=1, keepdims=True)))


def post(port, path, body, stream=False):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        if not stream:
            return json.load(r)
        events = [line[len(b"data: "):].decode() for line in r.read().splitlines() if line.startswith(b"data: ")]
        return events


def main():
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    port_file = os.path.join(WORK, "http-port")
    # float32 numerics, as lm-eval's check is stated: with `fast` (BF16 products) a decoded token's
    # logits differ from a prefill's of the same tokens by up to 5e-3 on this model (attention sums in
    # another order, then rounded to BF16); in float32 by ~1e-5.
    c = h.cluster(2, "--http-listen", "127.0.0.1:0", "--http-port-file", port_file, model=MODEL,
                  launch=("--cpu-numerics", "f32"))
    try:
        port = int(h.wait_for(lambda: os.path.exists(port_file) and open(port_file).read().strip(), "HTTP port"))
        prompts = [list(c.stub.Tokenize(pb.TokenizeRequest(text=t.encode(), add_bos=True)).ids) for t in TEXTS]

        # lm-eval's loglikelihood payload, batch size 4.
        lm_eval = dict(prompt=prompts, max_tokens=1, logprobs=1, echo=True, temperature=0, seed=1234)
        out = post(port, "/v1/completions", lm_eval)
        choices = sorted(out["choices"], key=lambda ch: ch["index"])
        check([ch["index"] for ch in out["choices"]] == [0, 1, 2, 3], "4 prompts, 4 choices indexed 0..3 in order")
        worst, greedy_ok, shape_ok = 0.0, True, True
        for ids, ch in zip(prompts, choices):
            lp = ch["logprobs"]
            ref = reference_logprobs(ids)
            gen_lp = lp["token_logprobs"][-1]
            gen_token = int(np.argmax(ref[-1]))
            shape_ok &= (len(lp["token_logprobs"]) == len(ids) + 1 and lp["token_logprobs"][0] is None
                         and lp["top_logprobs"][0] is None and ch["text"].startswith(TEXTS[choices.index(ch)][:4]))
            for i in range(1, len(ids)):
                worst = max(worst, abs(lp["token_logprobs"][i] - ref[i - 1, ids[i]]))
                top = lp["top_logprobs"][i]
                best = max(top.items(), key=lambda kv: kv[1])
                greedy_ok &= abs(best[1] - ref[i - 1].max()) <= TOLERANCE
            worst = max(worst, abs(gen_lp - ref[-1, gen_token]))
        check(shape_ok, "each choice: the prompt echoed, its first token null, one entry per prompt token + 1")
        check(worst <= TOLERANCE, f"prompt and generated log-probabilities == log_softmax(moe-logits): worst "
              f"|diff| {worst:.2e} <= {TOLERANCE}")
        check(greedy_ok, "top_logprobs' best is the argmax at every position (lm-eval's is_greedy)")
        alone = post(port, "/v1/completions", dict(lm_eval, prompt=[prompts[2]]))["choices"][0]["logprobs"]
        check(alone["token_logprobs"] == choices[2]["logprobs"]["token_logprobs"]
              and alone["top_logprobs"] == choices[2]["logprobs"]["top_logprobs"],
              "the same prompt alone and in a batch of 4: the same log-probabilities, bit for bit")
        check(out["usage"]["prompt_tokens"] == sum(map(len, prompts)) and out["usage"]["completion_tokens"] == 4,
              f"usage sums the choices: {out['usage']}")

        # Generated tokens' log-probabilities and their alternatives.
        gen = post(port, "/v1/completions", dict(prompt=prompts[1], max_tokens=8, logprobs=5, temperature=0))
        lp = gen["choices"][0]["logprobs"]
        gen_ids, rows = [], []
        for _ in range(len(lp["token_logprobs"])):  # greedy, step by step, on the reference
            rows.append(reference_logprobs(prompts[1] + gen_ids)[-1])
            gen_ids.append(int(np.argmax(rows[-1])))
        diffs = [abs(lp["token_logprobs"][k] - rows[k][t]) for k, t in enumerate(gen_ids)]
        top_ok = all(len(lp["top_logprobs"][k]) == 5 and
                     np.allclose(sorted(lp["top_logprobs"][k].values()), np.sort(rows[k])[-5:], rtol=0,
                                 atol=DECODE_TOLERANCE)
                     for k in range(len(gen_ids)))
        check(len(gen_ids) == 8 and max(diffs) <= DECODE_TOLERANCE,
              f"8 generated tokens' log-probabilities == the reference (worst {max(diffs):.2e})")
        check(top_ok, "logprobs 5: five alternatives per token, the reference's five best")
        chat = post(port, "/v1/chat/completions", dict(messages=[{"role": "user", "content": "def main():"}],
                                                        max_tokens=6, temperature=0, logprobs=True, top_logprobs=3))
        content = chat["choices"][0]["logprobs"]["content"]
        check(len(content) == chat["usage"]["completion_tokens"]
              and all(len(t["top_logprobs"]) == 3 and abs(t["top_logprobs"][0]["logprob"] - t["logprob"]) <= 1e-7
                      and bytes(t["bytes"]).decode("utf-8", "replace") for t in content),
              f"chat logprobs: {len(content)} tokens, each greedy token its own best of 3 alternatives")

        # Echo alone, and several prompts streamed.
        echo = post(port, "/v1/completions", dict(prompt=TEXTS[0], max_tokens=4, temperature=0, echo=True))
        plain = post(port, "/v1/completions", dict(prompt=TEXTS[0], max_tokens=4, temperature=0))
        check(echo["choices"][0]["text"] == TEXTS[0] + plain["choices"][0]["text"]
              and echo["choices"][0]["logprobs"] is None,
              f"echo: the prompt's text, then the completion ({echo['choices'][0]['text']!r})")
        events = post(port, "/v1/completions", dict(prompt=TEXTS[:3], max_tokens=6, temperature=0, stream=True),
                      stream=True)
        texts = {}
        for ev in events[:-1]:
            for ch in json.loads(ev)["choices"]:
                texts[ch["index"]] = texts.get(ch["index"], "") + ch["text"]
        alone = [post(port, "/v1/completions", dict(prompt=t, max_tokens=6, temperature=0))["choices"][0]["text"]
                 for t in TEXTS[:3]]
        check(events[-1] == "[DONE]" and [texts.get(i) for i in range(3)] == alone,
              "3 prompts streamed: each choice's chunks make the text it gets alone, then [DONE]")
    finally:
        check(c.stop() == 0, "SIGTERM: the cluster exits 0")


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # a harness failure (a command that failed): reported as a failed check
        check(False, f"{type(e).__name__}: {e}")
    sys.exit(h.finish())
