#!/usr/bin/env python3
"""Generate golden logits for tiny random Mixtral models with Hugging Face transformers.

NOT on the CI path: CI only consumes the files this script writes under
tests/golden/. Regenerate only when adding or changing cases.

Environment (CPU-only is enough):

    python3 -m venv V
    V/bin/pip install torch==2.15.0 transformers==5.24.0 safetensors numpy
    V/bin/python scripts/make_goldens.py            # writes tests/golden/<case>/ and README.md

The versions actually used are printed and recorded in every golden.json; a
different version only produces a warning (use --strict-versions to refuse).

For every case this script
  1. writes config.json + model.safetensors with scripts/make_model.py
     (write_model; "sensitive" init),
  2. loads it with MixtralForCausalLM.from_pretrained(dir, dtype=float32,
     attn_implementation="eager", experts_implementation="eager") and fails if
     any key is missing/unexpected/mismatched or any loading warning appears,
     then compares every loaded parameter with the file (the per-expert
     w1/w3/w2 tensors are fused into gate_up_proj/down_proj by transformers 5),
  3. runs one forward pass per prompt (positions 0..n-1, no cache) and saves
     logits_<i>.npy (float32 [n_tokens, vocab]) and experts_<i>.npy (int32
     [layers, n_tokens, top_k], the selected experts, HF's top-k order),
  4. checks routing robustness: for every layer/token the softmax probability
     gap between the k-th and (k+1)-th expert must be > 1e-3; otherwise the
     model is re-generated with the next seed,
  5. cross-checks the logits against scripts/reference_forward.py (independent
     float64 numpy implementation) and against transformers' default
     ("grouped_mm") experts implementation,
  6. case-specific sensitivity checks (sliding window matters and follows the
     rule "query p sees keys p-W+1..p"; RoPE theta matters).
Finally tests/golden/README.md is (re)written with the cases and check results.
"""

import argparse
import json
import logging
import os
import re
import shutil
import sys
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_model  # noqa: E402
import reference_forward  # noqa: E402

import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from transformers import MixtralConfig, MixtralForCausalLM  # noqa: E402

EXPECTED_VERSIONS = {"torch": "2.15.0", "transformers": "5.24.0"}
MIN_GAP = 1e-3          # min softmax prob gap between k-th and (k+1)-th expert
MIN_REL_EFFECT = 1e-2   # min relative logit change for the sensitivity checks
REF_TOL = 1e-4          # max |hf - ref| / max(1, max|hf|)
MAX_TRIES = 200
VOCAB = 1000

# model params (make_model.write_model keywords) + prompt lengths
CASES = [
    dict(name="swa_gqa4",
         desc="GQA ratio 4 (8 query heads, 2 kv heads, head_dim 4), sliding_window 8, F32, 8 experts top-2; "
              "prompts longer and shorter than the window",
         model=dict(hidden=32, intermediate=64, heads=8, kv_heads=2, experts=8, top_k=2,
                    sliding_window=8, dtype="f32"),
         lengths=[24, 31, 7], checks=["window"]),
    dict(name="head_dim",
         desc="explicit head_dim 32 != hidden/heads (48/4 = 12): q_proj [128, 48], o_proj [48, 128]; "
              "4 heads, 2 kv heads, F32, 8 experts top-2",
         model=dict(hidden=48, intermediate=32, heads=4, kv_heads=2, head_dim=32, experts=8, top_k=2,
                    dtype="f32"),
         lengths=[5, 17, 40], checks=[]),
    dict(name="e4_top1",
         desc="4 experts top-1 (router weight renormalised to 1.0), MHA (4 heads, 4 kv heads), F32",
         model=dict(hidden=32, intermediate=96, heads=4, kv_heads=4, experts=4, top_k=1, dtype="f32"),
         lengths=[12, 29], checks=[]),
    dict(name="e8_top2_bf16",
         desc="8 experts top-2, BF16 weights, MQA (4 heads, 1 kv head, head_dim 16), sliding_window null",
         model=dict(hidden=64, intermediate=64, heads=4, kv_heads=1, experts=8, top_k=2, dtype="bf16"),
         lengths=[9, 33, 20], checks=["rope"]),
    dict(name="f16_tied",
         desc="F16 weights, 6 experts top-3, tie_word_embeddings (no lm_head.weight), rope_theta 10000, "
              "4 heads, 2 kv heads, head_dim 16; router std 1/sqrt(hidden) (milder routing: with 6 experts top-3 the "
              "default 3/sqrt(hidden) almost never gives a clean routing margin)",
         model=dict(hidden=64, intermediate=64, heads=4, kv_heads=2, experts=6, top_k=3, dtype="f16",
                    tie_embeddings=True, rope_theta=10000.0, router_scale=1.0),
         lengths=[16, 38], checks=[]),
]


# A trained checkpoint, not generated here: the embedded default (scripts/train_demo_model.py).
# Its golden references the model directory instead of copying 37 MB; prompts are chosen from the
# candidates below for a clean routing margin (a trained router cannot be re-seeded), and
# transformers' greedy continuations are recorded with the logit margin of every step.
TRAINED_CASES = [
    dict(name="pystd", model_dir="deploy/models/pystd", greedy_tokens=24, n_prompts=3,
         desc="the embedded default: 4 layers, 256 wide, 8 experts top-2, BF16, tied embeddings, trained on "
              "Python code Debian ships (scripts/train_demo_model.py)",
         candidates=["def __init__(self, name, value):\n", "import os\nimport sys\n\n\ndef main(",
                     "    for i in range(len(", "class Queue:\n    \"\"\"A", "        if not isinstance(",
                     "try:\n    import", "    def __repr__(self):\n        return", "    raise ValueError(\"",
                     "from collections import", "        return self."]),
]


class _Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.records = []

    def emit(self, record):
        self.records.append(record.getMessage())


def rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def load(model_dir, mutate=None):
    """Load with transformers; fail on any missing/unexpected key or loading warning."""
    cfg = MixtralConfig.from_pretrained(model_dir)
    if mutate:
        mutate(cfg)
    cap = _Capture()
    tlog = logging.getLogger("transformers")
    tlog.addHandler(cap)
    with warnings.catch_warnings(record=True) as ws:
        warnings.simplefilter("always")
        model, info = MixtralForCausalLM.from_pretrained(
            model_dir, config=cfg, dtype=torch.float32, attn_implementation="eager",
            experts_implementation="eager", output_loading_info=True)
    tlog.removeHandler(cap)
    msgs = cap.records + [str(w.message) for w in ws]
    bad = {k: v for k, v in info.items() if v}
    if bad:
        raise SystemExit("FAIL %s: loading info not clean: %s" % (model_dir, bad))
    if msgs:
        raise SystemExit("FAIL %s: warnings while loading:\n  %s" % (model_dir, "\n  ".join(msgs)))
    model.eval()
    return model


def verify_weights(model, model_dir, n_layers, n_experts, tied):
    """Every tensor of the file must equal the corresponding loaded parameter (exactly)."""
    f = {k: v.float() for k, v in load_file(os.path.join(model_dir, "model.safetensors")).items()}
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    used = set()

    def same(key_file, tensor):
        used.add(key_file)
        if not torch.equal(f[key_file], tensor):
            raise SystemExit("FAIL: loaded weight differs from file for %s" % key_file)

    same("model.embed_tokens.weight", sd["model.embed_tokens.weight"])
    same("model.norm.weight", sd["model.norm.weight"])
    if tied:
        if model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr():
            raise SystemExit("FAIL: lm_head not tied to embed_tokens")
    else:
        same("lm_head.weight", sd["lm_head.weight"])
    for i in range(n_layers):
        p = "model.layers.%d." % i
        for k in ("input_layernorm", "post_attention_layernorm", "self_attn.q_proj", "self_attn.k_proj",
                  "self_attn.v_proj", "self_attn.o_proj"):
            same(p + k + ".weight", sd[p + k + ".weight"])
        same(p + "block_sparse_moe.gate.weight", sd[p + "mlp.gate.weight"])
        gu, down = sd[p + "mlp.experts.gate_up_proj"], sd[p + "mlp.experts.down_proj"]
        inter = gu.shape[1] // 2
        for e in range(n_experts):
            ep = p + "block_sparse_moe.experts.%d." % e
            same(ep + "w1.weight", gu[e, :inter])
            same(ep + "w3.weight", gu[e, inter:])
            same(ep + "w2.weight", down[e])
    if used != set(f):
        raise SystemExit("FAIL: file tensors not checked: %s" % sorted(set(f) - used))
    return len(used)


def run(model, ids, **kw):
    with torch.no_grad():
        out = model(torch.tensor([ids]), use_cache=False, output_router_logits=True, **kw)
    return out


def router_info(out, top_k):
    """(min prob gap and min logit gap between the k-th and (k+1)-th expert, selected experts [L, n, k])."""
    gaps, lgaps, sel = [float("inf")], [float("inf")], []
    for rl in out.router_logits:
        pr = torch.softmax(rl.float(), -1)
        s = torch.sort(pr, -1, descending=True).values
        ls = torch.sort(rl.float(), -1, descending=True).values
        if top_k < pr.shape[-1]:
            gaps.append(float((s[:, top_k - 1] - s[:, top_k]).min()))
            lgaps.append(float((ls[:, top_k - 1] - ls[:, top_k]).min()))
        sel.append(torch.topk(pr, top_k, -1).indices.numpy().astype(np.int32))
    return min(gaps), min(lgaps), np.stack(sel)


def check_window(model, model_dir, cfg, prompts, hf_logits, log):
    W = cfg["sliding_window"]
    # 1) the mask transformers actually applies (eager attention weights after softmax)
    ids = prompts[0]
    n = len(ids)
    with torch.no_grad():
        out = model(torch.tensor([ids]), use_cache=False, output_attentions=True)
    q = torch.arange(n)[:, None]
    k = torch.arange(n)[None, :]
    inside = (k <= q) & (k > q - W)
    for li, a in enumerate(out.attentions):
        a = a[0]
        if not bool((a[:, ~inside] == 0).all()) or not bool((a[:, inside] > 0).all()):
            raise SystemExit("FAIL: layer %d attention support is not {p-W+1..p}" % li)
    log("window: transformers' eager attention weights are > 0 exactly for keys p-%d+1..p (W=%d keys incl. "
        "self) and exactly 0 elsewhere, all %d layers, %d positions" % (W, W, len(out.attentions), n))
    # 2) the window matters: compare with sliding_window=None
    full = load(model_dir, mutate=lambda c: setattr(c, "sliding_window", None))
    res = {}
    for i, ids in enumerate(prompts):
        r = rel(run(full, ids).logits[0].numpy(), hf_logits[i])
        log("window: prompt %d (%d tokens): rel diff vs sliding_window=None: %.3g" % (i, len(ids), r))
        if len(ids) > W and r <= MIN_REL_EFFECT:
            raise SystemExit("FAIL: sliding window does not matter enough (%.3g)" % r)
        if len(ids) <= W and r > 1e-6:
            raise SystemExit("FAIL: window changes a prompt shorter than the window (%.3g)" % r)
        res["prompt%d_vs_no_window" % i] = r
    # 3) the independent reference with rules W, W+1 (p-W..p), W-1: only W must match
    for w in (W - 1, W, W + 1):
        errs = []
        for i, ids in enumerate(prompts):
            ref = reference_forward.forward(model_dir, ids, window_override=w)
            errs.append(float(np.abs(ref - hf_logits[i]).max() / max(1.0, np.abs(hf_logits[i]).max())))
        log("window: numpy reference with keys p-%d+1..p: max normalised error vs transformers %.3g"
            % (w, max(errs)))
        res["reference_window_%d" % w] = max(errs)
        if (w == W) != (max(errs) < REF_TOL):
            raise SystemExit("FAIL: window rule check (w=%d)" % w)
    return res


def check_rope(model_dir, cfg, prompts, hf_logits, log):
    def mut(c):
        c.rope_parameters = dict(c.rope_parameters, rope_theta=c.rope_parameters["rope_theta"] * 2)
    m2 = load(model_dir, mutate=mut)
    log("rope: perturbed model rope_parameters = %s" % m2.config.rope_parameters)
    res = {}
    for i, ids in enumerate(prompts):
        r = rel(run(m2, ids).logits[0].numpy(), hf_logits[i])
        log("rope: prompt %d (%d tokens): rel diff with rope_theta*2: %.3g" % (i, len(ids), r))
        if r <= MIN_REL_EFFECT:
            raise SystemExit("FAIL: RoPE theta does not matter enough (%.3g)" % r)
        res["prompt%d_theta_x2" % i] = r
    return res


def make_case(case, out_root, case_index, log):
    cdir = os.path.join(out_root, case["name"])
    if os.path.isdir(cdir):
        shutil.rmtree(cdir)
    os.makedirs(cdir)
    prng = np.random.default_rng(1000 + case_index)
    prompts = [[1] + [int(t) for t in prng.integers(3, VOCAB, size=n - 1)] for n in case["lengths"]]
    top_k = case["model"]["top_k"]
    rejected = 0
    for seed in range(MAX_TRIES):
        info = make_model.write_model(cdir, vocab=VOCAB, layers=2, seed=seed, **case["model"])
        cfg = info["config"]
        model = load(cdir)
        gaps, lgaps, outs = [], [], []
        for ids in prompts:
            out = run(model, ids)
            g, lg, sel = router_info(out, top_k)
            gaps.append(g)
            lgaps.append(lg)
            outs.append((out.logits[0].numpy().astype(np.float32), sel))
        if min(gaps) > MIN_GAP:
            break
        rejected += 1
    else:
        raise SystemExit("FAIL: no seed with a clean routing margin for %s" % case["name"])
    log("seed %d (%d earlier seeds rejected for a router prob gap <= %g): min router gap between the k-th and "
        "(k+1)-th expert: probability %.4f, logit %.4f" % (seed, rejected, MIN_GAP, min(gaps), min(lgaps)))
    n_checked = verify_weights(model, cdir, cfg["num_hidden_layers"], cfg["num_local_experts"],
                               cfg["tie_word_embeddings"])
    log("loading: clean (no missing/unexpected/mismatched keys, no warnings); all %d file tensors equal "
        "the loaded parameters (w1|w3 -> mlp.experts.gate_up_proj[e], w2 -> mlp.experts.down_proj[e])"
        % n_checked)
    hf_logits = [o[0] for o in outs]
    checks = {"seed": seed, "min_router_prob_gap": min(gaps), "min_router_logit_gap": min(lgaps)}

    # independent numpy reference (float64) and HF's default experts implementation
    worst = 0.0
    for i, ids in enumerate(prompts):
        ref, ref_sel = reference_forward.forward(cdir, ids, return_routing=True)
        worst = max(worst, float(np.abs(ref - hf_logits[i]).max() / max(1.0, np.abs(hf_logits[i]).max())))
        if not np.array_equal(np.sort(ref_sel, -1), np.sort(outs[i][1], -1)):
            raise SystemExit("FAIL: reference routing differs from transformers")
    log("reference: numpy float64 forward vs transformers: max normalised error %.3g, same experts" % worst)
    if worst >= REF_TOL:
        raise SystemExit("FAIL: reference mismatch %.3g" % worst)
    checks["reference_max_normalised_error"] = worst
    dflt = MixtralForCausalLM.from_pretrained(cdir, dtype=torch.float32, attn_implementation="eager")
    dflt.eval()
    d = max(float(np.abs(run(dflt, ids).logits[0].numpy() - hf_logits[i]).max()) for i, ids in enumerate(prompts))
    log("experts: default implementation %r vs 'eager': max abs logit diff %.3g"
        % (dflt.config._experts_implementation, d))
    checks["default_experts_impl_max_abs_diff"] = d
    amax = max(float(np.abs(l).max()) for l in hf_logits)
    astd = float(np.mean([l.std() for l in hf_logits]))
    log("logits: max |logit| %.2f, mean std %.2f" % (amax, astd))

    if "window" in case["checks"]:
        checks.update(check_window(model, cdir, cfg, prompts, hf_logits, log))
    if "rope" in case["checks"]:
        checks.update(check_rope(cdir, cfg, prompts, hf_logits, log))
    else:  # informational only
        def mut(c):
            c.rope_parameters = dict(c.rope_parameters, rope_theta=c.rope_parameters["rope_theta"] * 2)
        m2 = load(cdir, mutate=mut)
        r = min(rel(run(m2, ids).logits[0].numpy(), hf_logits[i]) for i, ids in enumerate(prompts))
        log("rope (info): min rel diff with rope_theta*2: %.3g" % r)
        checks["min_rel_diff_theta_x2"] = r

    for i, (lg, sel) in enumerate(outs):
        np.save(os.path.join(cdir, "logits_%d.npy" % i), lg)
        np.save(os.path.join(cdir, "experts_%d.npy" % i), sel)
    golden = {
        "case": case["name"],
        "description": case["desc"],
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "prompts": prompts,
        "seed": seed,
        "make_model": {k: v for k, v in dict(make_model.DEFAULTS, **case["model"], vocab=VOCAB, layers=2,
                                             seed=seed, init="sensitive").items() if k != "tokenizer"},
        "checks": checks,
    }
    with open(os.path.join(cdir, "golden.json"), "w") as f:
        # one line per prompt
        f.write(re.sub(r"\[[\d,\s]*\]", lambda m: " ".join(m.group(0).split()), json.dumps(golden, indent=1)))
        f.write("\n")
    sizes = {fn: os.path.getsize(os.path.join(cdir, fn)) for fn in sorted(os.listdir(cdir))}
    return golden, cfg, info, sizes


README_HEAD = """# Golden logits from Hugging Face transformers

Generated by `scripts/make_goldens.py` (not run in CI) with
transformers {tf} and torch {torch} (CPU, float32).

## Regenerating

```sh
python3 -m venv V
V/bin/pip install torch==2.15.0 transformers==5.24.0 safetensors numpy
V/bin/python scripts/make_goldens.py          # rewrites tests/golden/<case>/ and this README
python3 scripts/reference_forward.py tests/golden/CASE --golden tests/golden/CASE   # numpy-only cross-check
```

Models are written by `scripts/make_model.py` (`write_model`, "sensitive" init,
2 layers, vocab 1000); a case's exact parameters and seed are in its
`golden.json` under `make_model`, so `python3 scripts/make_model.py` with the same
flags reproduces `model.safetensors` byte for byte.

The trained case `pystd` (the embedded default, `deploy/models/pystd`, trained by
`scripts/train_demo_model.py`) is not generated: its `golden.json` names the model directory
(`model_dir`) instead of holding a copy, its prompts are Python snippets chosen for a clean routing
margin, and `greedy` holds transformers' greedy continuation of each (24 tokens, one full
forward pass per token) with the top-1/top-2 logit margin of every step.

The quantized cases `pystd_int8` and `pystd_int4` (`--quantize int8` and `int4` on the same model)
come from `scripts/make_quant_goldens.py BUILD/bin` instead (numpy only): the checkpoint that
`moe-quantize` writes, dequantized by the format's definition, run through
`scripts/reference_forward.py` in float64 with every quantized product's activations quantized as
the kernels do (per row, blocks of 64). Their `golden.json` says so (`quantize`, `reference`) and
records what the activations' quantization and the format cost against float activations and
against the 16-bit golden.

## Files per case (`tests/golden/<case>/`)

| file | content |
|------|---------|
| `config.json` | HF MixtralConfig fields (`rope_theta`, `sliding_window`, optional `head_dim`, ...) |
| `model.safetensors` | HF tensor names, per-expert `model.layers.N.block_sparse_moe.experts.E.{{w1,w2,w3}}.weight`; dtype F32, BF16 or F16; `__metadata__ = {{"format": "pt"}}` |
| `golden.json` | `case`, `transformers`, `torch`, `prompts` (list of token-id lists, each starting with 1), plus `description`, `seed`, `make_model` (generator parameters) and `checks` (values measured by the script) |
| `logits_<i>.npy` | float32 `[n_tokens, vocab]`, numpy .npy v1.0 little-endian C order: logits of prompt `i` at every position, from one forward pass over the whole prompt (positions 0..n-1, no KV cache, no BOS added: the prompt already starts with 1) |
| `experts_<i>.npy` | int32 `[layers, n_tokens, top_k]`: experts chosen by the router for prompt `i` (transformers' `torch.topk` order = descending probability) |

The reference computation is `MixtralForCausalLM.from_pretrained(dir, dtype=torch.float32,
attn_implementation="eager", experts_implementation="eager")`: the weights (also BF16/F16 ones)
are upcast to float32 exactly and everything is computed in float32. An engine computing in
float32 should match to ~1e-4 relative; BF16/F16 compute needs looser tolerances.

## Semantics verified by the script (transformers {tf})

* **Sliding window**: the query at position p sees keys **p-W+1 .. p** (W keys including
  itself). transformers builds the mask with `kv_idx > q_idx - sliding_window` and
  `kv_idx <= q_idx` (`masking_utils.sliding_window_overlay`); the script checks the eager
  attention weights are exactly 0 outside and > 0 inside that range, and that the numpy
  reference matches only with this rule (not with p-W..p or p-W+2..p).
* **Router**: `softmax(x @ gate.T)` over all experts in float32, `torch.topk`, then the k
  probabilities are renormalised to sum to 1 (always, also for top-1, where the weight is 1.0).
  Expert output `w2(silu(w1 x) * w3 x)`.
* **head_dim**: `config.head_dim` when present, else hidden/heads; attention scale
  1/sqrt(head_dim); q_proj is [heads*head_dim, hidden] and o_proj [hidden, heads*head_dim].
* **RoPE**: rotate_half convention (dims i and i+head_dim/2 form a pair),
  inv_freq = theta^(-2i/head_dim); `rope_theta` in config.json becomes
  `config.rope_parameters["rope_theta"]` in transformers 5.
* **Loading**: transformers 5 fuses the per-expert tensors on load
  (`block_sparse_moe.experts.E.w1/w3` -> `mlp.experts.gate_up_proj[E] = [w1; w3]`,
  `w2` -> `mlp.experts.down_proj[E]`); the script requires a clean loading report and
  compares every parameter with the file.
* **Routing margin**: for every layer and token, the softmax probability of the k-th chosen
  expert exceeds that of the best unchosen one by > {gap:g} (models are re-seeded until true),
  so a correct float32 engine picks the same experts. The corresponding router *logit* margin
  can be small (see `checks.min_router_logit_gap` in each golden.json, ~0.01-0.02), so an engine
  computing activations in BF16/F16 may legitimately route a token differently.

## Cases
"""


def make_trained_case(case, out_root, log):
    """Golden logits, experts and greedy continuations for a trained checkpoint in the source tree."""
    import sentencepiece
    root = os.path.dirname(HERE)
    model_dir = os.path.join(root, case["model_dir"])
    cdir = os.path.join(out_root, case["name"])
    if os.path.isdir(cdir):
        shutil.rmtree(cdir)
    os.makedirs(cdir)
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    model = load(model_dir)
    n_checked = verify_weights(model, model_dir, cfg["num_hidden_layers"], cfg["num_local_experts"],
                               cfg["tie_word_embeddings"])
    log("loading %s: clean; all %d file tensors equal the loaded parameters" % (case["model_dir"], n_checked))
    sp = sentencepiece.SentencePieceProcessor(model_file=os.path.join(model_dir, "tokenizer.model"))
    top_k = cfg["num_experts_per_tok"]
    chosen = []
    for text in case["candidates"]:
        ids = [1] + sp.encode(text)
        out = run(model, ids)
        gap, lgap, sel = router_info(out, top_k)
        log("candidate %r (%d tokens): min router prob gap %.4f%s" % (
            text, len(ids), gap, "" if gap > MIN_GAP else " (rejected: <= %g)" % MIN_GAP))
        if gap > MIN_GAP:
            chosen.append((text, ids, out.logits[0].numpy().astype(np.float32), sel, gap, lgap))
        if len(chosen) == case["n_prompts"]:
            break
    if len(chosen) < case["n_prompts"]:
        raise SystemExit("FAIL: only %d candidate prompts have a clean routing margin" % len(chosen))
    worst = 0.0
    for text, ids, logits, sel, _, _ in chosen:
        ref, ref_sel = reference_forward.forward(model_dir, ids, return_routing=True)
        worst = max(worst, float(np.abs(ref - logits).max() / max(1.0, np.abs(logits).max())))
        if not np.array_equal(np.sort(ref_sel, -1), np.sort(sel, -1)):
            raise SystemExit("FAIL: reference routing differs from transformers")
    log("reference: numpy float64 forward vs transformers: max normalised error %.3g, same experts" % worst)
    if worst >= REF_TOL:
        raise SystemExit("FAIL: reference mismatch %.3g" % worst)
    greedy = []
    for i, (text, ids, logits, sel, _, _) in enumerate(chosen):
        seq, margins = list(ids), []
        for _ in range(case["greedy_tokens"]):  # one full forward per token: the no-cache reference
            last = run(model, seq).logits[0, -1].numpy().astype(np.float64)
            top2 = np.sort(last)[-2:]
            margins.append(float(top2[1] - top2[0]))
            seq.append(int(np.argmax(last)))
        tokens = seq[len(ids):]
        greedy.append({"prompt": i, "tokens": tokens, "min_logit_margin": min(margins),
                       "logit_margins": [round(m, 6) for m in margins], "text": sp.decode(tokens)})
        log("greedy %d: %r -> %r (min top-1/top-2 logit margin %.4f)" % (i, text, sp.decode(tokens), min(margins)))
        np.save(os.path.join(cdir, "logits_%d.npy" % i), logits)
        np.save(os.path.join(cdir, "experts_%d.npy" % i), sel)
    golden = {
        "case": case["name"],
        "description": case["desc"],
        "model_dir": case["model_dir"],
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "prompts": [c[1] for c in chosen],
        "prompt_texts": [c[0] for c in chosen],
        "greedy": greedy,
        "checks": {"min_router_prob_gap": min(c[4] for c in chosen),
                   "min_router_logit_gap": min(c[5] for c in chosen),
                   "reference_max_normalised_error": worst},
    }
    with open(os.path.join(cdir, "golden.json"), "w") as f:
        f.write(re.sub(r"\[[\d,\s.e-]*\]", lambda m: " ".join(m.group(0).split()), json.dumps(golden, indent=1)))
        f.write("\n")
    return golden


def write_readme(out_root, results):
    lines = [README_HEAD.format(tf=transformers.__version__, torch=torch.__version__, gap=MIN_GAP)]
    lines.append("| case | description | dtype | hidden | heads/kv | head_dim | experts/top-k | window | "
                 "rope_theta | tied | prompt lengths | model.safetensors bytes |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for golden, cfg, info, sizes, logs in results:
        hd = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
        lines.append("| `%s` | %s | %s | %d | %d/%d | %d | %d/%d | %s | %g | %s | %s | %d |" % (
            golden["case"], golden["description"], cfg["torch_dtype"], cfg["hidden_size"],
            cfg["num_attention_heads"], cfg["num_key_value_heads"], hd, cfg["num_local_experts"],
            cfg["num_experts_per_tok"], "null" if cfg["sliding_window"] is None else cfg["sliding_window"],
            cfg["rope_theta"],
            str(cfg["tie_word_embeddings"]).lower(), ", ".join(str(len(p)) for p in golden["prompts"]),
            sizes["model.safetensors"]))
    lines.append("\n## Check results (from the last generation run)\n")
    for golden, cfg, info, sizes, logs in results:
        lines.append("### %s\n" % golden["case"])
        lines.append("```")
        lines.extend(logs)
        lines.append("```\n")
    with open(os.path.join(out_root, "README.md"), "w") as f:
        f.write("\n".join(lines))


def main():
    ap = argparse.ArgumentParser(description="Generate golden logits with transformers.")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(HERE), "tests", "golden"))
    ap.add_argument("--case", action="append", help="only these cases (default all)")
    ap.add_argument("--strict-versions", action="store_true")
    a = ap.parse_args()
    vers = {"torch": torch.__version__, "transformers": transformers.__version__}
    print("python %s, torch %s, transformers %s, numpy %s" % (sys.version.split()[0], vers["torch"],
                                                               vers["transformers"], np.__version__))
    for k, v in EXPECTED_VERSIONS.items():
        if not vers[k].split("+")[0] == v:
            msg = "%s %s differs from the expected %s" % (k, vers[k], v)
            if a.strict_versions:
                raise SystemExit(msg)
            print("WARNING: " + msg)
    transformers.utils.logging.disable_progress_bar()
    torch.set_grad_enabled(False)
    os.makedirs(a.out, exist_ok=True)
    results = []
    for ci, case in enumerate(CASES):
        if a.case and case["name"] not in a.case:
            continue
        logs = []

        def log(s, _l=logs, _n=case["name"]):
            _l.append(s)
            print("[%s] %s" % (_n, s), flush=True)

        golden, cfg, info, sizes = make_case(case, a.out, ci, log)
        log("files: " + ", ".join("%s %d B" % kv for kv in sizes.items()))
        results.append((golden, cfg, info, sizes, logs))
    for case in TRAINED_CASES:
        if a.case and case["name"] not in a.case:
            continue

        def log(s, _n=case["name"]):
            print("[%s] %s" % (_n, s), flush=True)

        make_trained_case(case, a.out, log)
    if not a.case:
        write_readme(a.out, results)
    print("all cases OK")


if __name__ == "__main__":
    main()
