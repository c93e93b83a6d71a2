#!/usr/bin/env python3
"""Makes tests/golden/lm_eval: two small lm-eval tasks on held-out Python and what Hugging Face
`transformers` itself computes for them (float32), which lm_eval_test then asks of the server
through lm-eval 0.4.13's `--model local-completions`; lm-eval's own `--model hf` run is recorded
beside it.

- next_line.jsonl (pystd_next_line.yaml, multiple choice): 12 lines of a held-out file, then which
  of 4 lines comes next: the true one or 3 of similar length from other held-out files;
- complete.jsonl (pystd_complete.yaml, generate_until): a held-out `def` line and the lines up to
  its blank line; kept only where transformers' greedy choice leads its runner-up by at least 0.05
  at every step of the first 32 tokens, so f32 rounding cannot flip a token;
- golden.json: per document, each choice's log-likelihood from transformers' float32 logits (the
  log_softmax in float64; lm-eval's hf model's own figures, log_softmax in float32, beside them),
  transformers' greedy text
  (complete.jsonl's "greedy"; lm-eval's hf model decodes a continuation alone, which drops its
  first space, so its own texts are not the reference), and the versions that made them.

NOT on the CI path: its output is committed. Environment (torch only here, not in the tests):

    python3 -m venv V
    V/bin/pip install torch==2.15.0 transformers==5.24.0 "lm-eval[api,hf]==0.4.13"
    V/bin/python scripts/make_lm_eval_golden.py
"""
import glob
import importlib.metadata
import json
import os
import random
import subprocess
import sys

import torch
import transformers

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
MODEL = os.path.join(ROOT, "deploy/models/pystd")
OUT = os.path.join(ROOT, "tests/golden/lm_eval")
N_CHOICE, N_COMPLETE, CONTEXT_LINES, MIN_MARGIN, MAX_GEN = 24, 8, 12, 0.05, 32


def held_out_sources():
    with open(os.path.join(MODEL, "training.json")) as f:
        files = json.load(f)["corpus"]["held_out_files"]
    out = {}
    for path in files:
        if path.startswith("/usr/lib/python3.11/") and os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                out[path] = f.read().split("\n")
    return out


def next_line_items(sources, rng):
    pool = [(p, line) for p, lines in sources.items() for line in lines if 20 <= len(line) <= 80]
    items = []
    paths = sorted(sources)
    while len(items) < N_CHOICE:
        path = rng.choice(paths)
        lines = sources[path]
        i = rng.randrange(CONTEXT_LINES, max(CONTEXT_LINES + 1, len(lines) - 1))
        gold = lines[i] if i < len(lines) else ""
        if not 20 <= len(gold) <= 80:
            continue
        others = [line for p, line in pool if p != path and abs(len(line) - len(gold)) <= len(gold) // 2
                  and line != gold]
        choices = [gold] + rng.sample(others, 3)
        rng.shuffle(choices)
        context = "\n".join(lines[i - CONTEXT_LINES:i]) + "\n"
        items.append({"source": f"{os.path.basename(path)}:{i + 1}", "context": context,
                      "choices": [c + "\n" for c in choices], "label": choices.index(gold)})
    return items


def greedy(model, tok, prompt):
    """transformers' greedy text after the prompt (MAX_GEN tokens, cut at the first blank line, the
    whole sequence decoded: a continuation decoded alone loses its first space, as lm-eval's hf
    model's does) and the smallest lead of a greedy token over its runner-up (float32)."""
    prompt_ids = tok(prompt).input_ids
    ids = torch.tensor([prompt_ids])
    smallest = float("inf")
    with torch.no_grad():
        for _ in range(MAX_GEN):
            logits = model(ids).logits[0, -1].float()
            top = torch.topk(logits, 2).values
            smallest = min(smallest, float(top[0] - top[1]))
            ids = torch.cat([ids, logits.argmax().view(1, 1)], dim=1)
    text = tok.decode(ids[0].tolist(), skip_special_tokens=True)[len(tok.decode(prompt_ids, skip_special_tokens=True)):]
    return text.split("\n\n")[0], smallest


def complete_items(sources, rng):
    model = transformers.AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32)
    tok = transformers.AutoTokenizer.from_pretrained(MODEL)
    candidates = []
    for path in sorted(sources):
        lines = sources[path]
        for i, line in enumerate(lines):
            if line.lstrip().startswith("def ") and line.rstrip().endswith(":"):
                end = next((j for j in range(i + 1, len(lines)) if not lines[j].strip()), len(lines))
                candidates.append((path, i, "\n".join(lines[max(0, i - 4):i + 1]) + "\n",
                                   "\n".join(lines[i + 1:end])))
    rng.shuffle(candidates)
    items = []
    for path, i, prompt, completion in candidates:
        text, margin = greedy(model, tok, prompt)
        if margin >= MIN_MARGIN:
            items.append({"source": f"{os.path.basename(path)}:{i + 1}", "prompt": prompt,
                          "completion": completion, "greedy": text, "min_margin": round(margin, 4)})
        if len(items) == N_COMPLETE:
            return items
    raise SystemExit("too few prompts with a clear greedy path")


def float64_loglikelihoods(items):
    """Per document, each choice's log-likelihood from transformers' float32 logits with log_softmax
    in float64, the tokens split as lm-eval splits them (TemplateLM._encode_pair: trailing
    whitespace of the context moves to the continuation; the continuation is what the whole
    encoding adds to the context's). lm-eval's hf model takes log_softmax in float32, whose sum over
    32,000 terms runs ~5e-6 high per token; the server's is in float64, like this one."""
    model = transformers.AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32)
    tok = transformers.AutoTokenizer.from_pretrained(MODEL)
    out = {}
    for d, item in enumerate(items):
        out[str(d)] = []
        for choice in item["choices"]:
            context, continuation = item["context"], choice
            n = len(context) - len(context.rstrip())
            if n:
                context, continuation = context[:-n], context[-n:] + continuation
            whole = tok(context + continuation).input_ids
            first = len(tok(context).input_ids)
            with torch.no_grad():
                logits = model(torch.tensor([whole])).logits[0].double()
            logprobs = torch.log_softmax(logits, -1)
            out[str(d)].append(sum(float(logprobs[p - 1, whole[p]]) for p in range(first, len(whole))))
    return out


def run_lm_eval(work):
    args = [sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args",
            f"pretrained={MODEL},dtype=float32,add_bos_token=True", "--tasks", "pystd_next_line,pystd_complete",
            "--include_path", OUT, "--batch_size", "1", "--log_samples", "--output_path", work, "--device", "cpu"]
    env = dict(os.environ, HF_HOME=os.path.join(work, "hf"), HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1")
    subprocess.run(args, cwd=OUT, env=env, check=True)
    return read_samples(work)


def read_samples(work):
    """{task: {doc_id: resps}} from the samples lm-eval logs."""
    out = {}
    for path in glob.glob(os.path.join(work, "**", "samples_*.jsonl"), recursive=True):
        task = os.path.basename(path)[len("samples_"):].rsplit("_", 1)[0]
        with open(path) as f:
            out[task] = {json.loads(line)["doc_id"]: json.loads(line)["resps"] for line in f}
    return out


def main():
    rng = random.Random(0)
    sources = held_out_sources()
    choice_items = next_line_items(sources, rng)
    for name, items in (("next_line", choice_items), ("complete", complete_items(sources, rng))):
        with open(os.path.join(OUT, f"{name}.jsonl"), "w") as f:
            f.writelines(json.dumps(item) + "\n" for item in items)
    work = os.path.join("/tmp", "lm_eval_golden")
    subprocess.run(["rm", "-rf", work], check=True)
    samples = run_lm_eval(work)
    with open(os.path.join(OUT, "complete.jsonl")) as f:
        greedy_texts = [json.loads(line)["greedy"] for line in f]
    reference = float64_loglikelihoods(choice_items)
    lm_eval_hf = {str(d): [float(r[0][0]) for r in resps] for d, resps in sorted(samples["pystd_next_line"].items())}
    worst = max(abs(a - b) for d in reference for a, b in zip(reference[d], lm_eval_hf[d]))
    assert worst < 1e-3, f"lm-eval's hf model split the tokens otherwise (|diff| {worst})"
    golden = {
        "made_by": f"transformers {transformers.__version__} and torch {torch.__version__} (float32 logits, "
                   f"log_softmax in float64); lm-eval {importlib.metadata.version('lm_eval')} --model hf beside",
        "loglikelihoods": reference,
        "lm_eval_hf_loglikelihoods": lm_eval_hf,
        "lm_eval_hf_worst_difference": worst,
        "generations": {str(d): text for d, text in enumerate(greedy_texts)},
        "lm_eval_hf_generations": {str(d): resps[0][0] for d, resps in sorted(samples["pystd_complete"].items())},
    }
    with open(os.path.join(OUT, "golden.json"), "w") as f:
        json.dump(golden, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(json.dumps(golden, indent=1)[:2000])


main()
