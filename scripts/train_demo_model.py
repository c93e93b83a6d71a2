#!/usr/bin/env python3
"""Trains the embedded default model: a small MixtralForCausalLM on Python source as Debian ships it
(the standard library, libpython3.11-stdlib, and five pure-Python packages from dist-packages), with
the real Mixtral tokenizer, 8 experts top-2 and Mixtral's router load-balancing loss, on the CPU.

NOT on the CI path and not part of the demo: its result is committed (see --out). Environment,
pinned (CPU is enough; the torch wheel brings CUDA libraries it does not use here):

    python3 -m venv V
    V/bin/pip install torch==2.15.0 transformers==5.24.0 sentencepiece==0.2.3 safetensors==0.8.0 \\
        numpy matplotlib
    V/bin/python scripts/train_demo_model.py --out DIR

What it does, in order:
  1. lists the corpus (*.py under each --corpus directory, without tests and caches), records each
     file's sha256 and a hash of the whole list, and splits it by file: a file whose path hashes to
     0 mod 20 is held out (about 5% of the files; code of a module never leaks across the split);
  2. tokenizes each file as BOS + text + EOS with the Mixtral tokenizer (core/model/tokenizer);
  3. trains from a fixed seed on random windows of the training stream: AdamW, warm-up then
     cosine decay, bfloat16 autocast where the CPU has it; the loss is the language-model loss plus
     router_aux_loss_coef x the Switch load-balancing loss Mixtral trains with, per layer (each
     layer's experts balanced; --aux-loss pooled is transformers' form over all layers' tokens,
     which balances only the layer-summed load), on windows as long as the context served;
  4. measures held-out loss and perplexity on every held-out token, and a bigram baseline
     (Witten-Bell smoothing over an add-one unigram, no tuning) on the same split;
  5. writes DIR/config.json, DIR/model.safetensors (BF16, the original Mixtral tensor names:
     block_sparse_moe.experts.E.w1/w2/w3), DIR/tokenizer.model, DIR/training.json (corpus, split,
     hashes, shape, steps, tokens, wall time, losses, versions) and DIR/loss_curve.png, then loads
     the file back with from_pretrained and checks its logits against the trained model's.

usage: train_demo_model.py [--out DIR] [--steps N] [--threads N] [...]   (--help for all)
"""
import argparse
import hashlib
import json
import math
import os
import platform
import random
import shutil
import subprocess
import sys
import time

import numpy as np
import sentencepiece
import torch
import transformers
from safetensors.torch import save_file
from transformers import MixtralConfig, MixtralForCausalLM

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_model  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
TOKENIZER = os.path.join(ROOT, "core", "model", "tokenizer", "tokenizer.model")
PINNED = {"torch": "2.15.0", "transformers": "5.24.0", "sentencepiece": "0.2.3"}
BOS, EOS = 1, 2
HELD_OUT_MODULUS = 20
# Python code that Debian packages ship: the standard library (libpython3.11-stdlib) is 3.4M tokens,
# too few for 7M tokens of training without repeating it twice; five common pure-Python packages
# triple it, so training sees each window about once.
DEFAULT_CORPUS = ["/usr/lib/python3.11"] + [f"/usr/lib/python3/dist-packages/{d}" for d in
                                             ("pip", "setuptools", "pkg_resources", "pygments", "numpy")]
SAMPLE_PROMPTS = ["def __init__(self", "import os\nimport sys\n\n\ndef main(", "class Queue:\n    \"\"\"",
                  "    for i in range(", "    if not isinstance(", "try:\n    import"]


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.path.join(ROOT, "deploy", "models", "pystd"), help="checkpoint directory")
    p.add_argument("--corpus", nargs="+", default=DEFAULT_CORPUS,
                   help="directories of .py files (default: the standard library and five pure-Python "
                        "Debian packages, python3-pip, -setuptools, -pkg-resources, -pygments, -numpy)")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--intermediate", type=int, default=384, help="each expert's FFN width")
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--experts", type=int, default=8)
    p.add_argument("--top-k", type=int, default=2)
    p.add_argument("--max-pos", type=int, default=2048, help="max_position_embeddings in config.json")
    p.add_argument("--rope-theta", type=float, default=1e6)
    p.add_argument("--aux-loss-coef", type=float, default=0.02, help="router_aux_loss_coef (Mixtral-8x7B's)")
    p.add_argument("--aux-loss", choices=("per-layer", "pooled"), default="per-layer",
                   help="the Switch load-balancing loss per layer, averaged (each layer's experts balanced), "
                        "or transformers' over all layers' tokens pooled (only the layer-summed load balanced)")
    p.add_argument("--seq", type=int, default=2048, help="training window, tokens: the context served")
    p.add_argument("--batch", type=int, default=4, help="windows per step")
    p.add_argument("--steps", type=int, default=900, help="7.4M tokens at the defaults")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--eval-every", type=int, default=250, help="steps between held-out evaluations")
    p.add_argument("--eval-windows", type=int, default=24, help="held-out windows per interim evaluation")
    p.add_argument("--init", default="", help="continue from this checkpoint (its BF16 weights; a fresh optimizer) "
                                             "instead of a random initialisation: e.g. a longer context or "
                                             "another balancing loss on a trained model; its training.json is "
                                             "kept in the record as the earlier phase")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--no-bf16", action="store_true", help="train in float32 even where bf16 autocast works")
    p.add_argument("--strict-versions", action="store_true", help="refuse versions other than the pinned ones")
    return p.parse_args(argv)


def check_versions(strict):
    found = {"torch": torch.__version__.split("+")[0], "transformers": transformers.__version__,
             "sentencepiece": sentencepiece.__version__}
    for name, want in PINNED.items():
        if found[name] != want:
            msg = f"train_demo_model.py: {name} {found[name]}, pinned {want}"
            if strict:
                sys.exit(msg)
            print("warning: " + msg, file=sys.stderr)
    return found


def list_corpus(roots):
    """Sorted paths of the corpus files (without tests and caches), each with its sha256."""
    files = []
    for root in roots:
        if not os.path.isdir(root):
            sys.exit(f"train_demo_model.py: corpus directory {root} does not exist")
        for d, dirs, names in os.walk(root):
            dirs[:] = sorted(x for x in dirs if x not in ("dist-packages", "site-packages", "__pycache__", "test",
                                                         "tests", "idle_test"))
            for n in sorted(names):
                if n.endswith(".py"):
                    path = os.path.normpath(os.path.join(d, n))
                    with open(path, "rb") as f:
                        files.append((path, hashlib.sha256(f.read()).hexdigest()))
    files.sort()
    return files


def debian_packages(roots, files):
    """The Debian packages (with versions) that ship each corpus directory's files, as dpkg says."""
    out = {}
    for root in roots:
        paths = [p for p, _ in files if p.startswith(root.rstrip("/") + "/")]
        pkgs = set()
        try:
            for i in range(0, len(paths), 500):
                listing = subprocess.run(["dpkg", "-S"] + paths[i:i + 500], capture_output=True, text=True).stdout
                pkgs.update(line.split(":")[0] for line in listing.splitlines() if ":" in line)
            out[root] = sorted(
                f"{p} {subprocess.run(['dpkg-query', '-W', '-f=${Version}', p], capture_output=True, text=True).stdout}"
                for p in pkgs)
        except OSError:
            out[root] = ["unknown (no dpkg)"]
    return out


def held_out(rel):
    return int(hashlib.sha256(rel.encode()).hexdigest()[:8], 16) % HELD_OUT_MODULUS == 0


def tokenize(paths, sp):
    """One stream: BOS + file tokens + EOS per file, in the given order; int32."""
    out = []
    for path in paths:
        with open(path, encoding="utf-8", errors="replace") as f:
            out.append(np.array([BOS] + sp.encode(f.read()) + [EOS], dtype=np.int32))
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int32)


def bigram_perplexity(train, test, vocab):
    """Witten-Bell bigram over an add-one unigram, fitted on `train`, perplexity on `test`."""
    uni = np.bincount(train, minlength=vocab).astype(np.float64) + 1.0
    p_uni = uni / uni.sum()
    pairs = train[:-1].astype(np.int64) * vocab + train[1:]
    keys, counts = np.unique(pairs, return_counts=True)
    prev = keys // vocab
    c_prev = np.bincount(prev, weights=counts, minlength=vocab)          # c(a)
    t_prev = np.bincount(prev, minlength=vocab).astype(np.float64)      # distinct successors of a
    lookup = dict(zip(keys.tolist(), counts.tolist()))
    a, b = test[:-1].astype(np.int64), test[1:].astype(np.int64)
    c_ab = np.array([lookup.get(k, 0) for k in (a * vocab + b).tolist()], dtype=np.float64)
    denom = c_prev[a] + t_prev[a]
    p = np.where(denom > 0, (c_ab + t_prev[a] * p_uni[b]) / np.maximum(denom, 1e-300), p_uni[b])
    return float(math.exp(-np.mean(np.log(p))))


def make_config(a):
    return MixtralConfig(
        vocab_size=32000, hidden_size=a.hidden, intermediate_size=a.intermediate, num_hidden_layers=a.layers,
        num_attention_heads=a.heads, num_key_value_heads=a.kv_heads, num_local_experts=a.experts,
        num_experts_per_tok=a.top_k, max_position_embeddings=a.max_pos, rope_theta=a.rope_theta,
        rms_norm_eps=1e-5, sliding_window=None, tie_word_embeddings=True, bos_token_id=BOS, eos_token_id=EOS,
        router_aux_loss_coef=a.aux_loss_coef, output_router_logits=True, attention_dropout=0.0)


def evaluate(model, stream, seq, max_windows, autocast):
    """Mean held-out language-model loss (nats/token) over consecutive windows of `stream`."""
    model.eval()
    total, count = 0.0, 0
    n = (len(stream) - 1) // seq
    if max_windows:
        n = min(n, max_windows)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        for w in range(n):
            x = torch.from_numpy(stream[w * seq:(w + 1) * seq + 1].astype(np.int64))[None]
            logits = model(input_ids=x[:, :-1], output_router_logits=False).logits.float()
            loss = torch.nn.functional.cross_entropy(logits[0], x[0, 1:], reduction="sum")
            total += float(loss)
            count += seq
    model.train()
    return total / max(count, 1)


def switch_balancing_loss(router_logits, top_k, per_layer):
    """The Switch Transformer load-balancing loss Mixtral trains with, k * E * sum_e f_e * P_e (f_e:
    the share of token-choices routed to expert e, P_e: its mean router probability), k when
    balanced: transformers' scale, so that router_aux_loss_coef means what it means there.
    per_layer: computed for each layer and averaged, so every layer's own experts are balanced;
    else over all layers' tokens pooled, as transformers' load_balancing_loss_func does, which
    only balances the layer-summed load."""
    def loss(logits):  # [tokens, E]
        probs = torch.softmax(logits.float(), dim=-1)
        chosen = torch.nn.functional.one_hot(torch.topk(probs, top_k, dim=-1).indices, probs.shape[-1]).float()
        f = chosen.mean(dim=(0, 1))
        return top_k * probs.shape[-1] * torch.sum(f * probs.mean(dim=0))
    if per_layer:
        return torch.stack([loss(layer) for layer in router_logits]).mean()
    return loss(torch.cat(list(router_logits), dim=0))


def context_evaluation(model, stream, long_seq, short_seq, max_windows, autocast):
    """Mean loss of the same held-out tokens scored in one long context and in fresh short windows:
    each long window's tokens after its first short window, once with everything before them in
    the long context, once with only their own short window before them."""
    model.eval()
    long_total = short_total = 0.0
    count = 0
    n = min((len(stream) - 1) // long_seq, max_windows)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        for w in range(n):
            x = torch.from_numpy(stream[w * long_seq:(w + 1) * long_seq + 1].astype(np.int64))[None]
            logits = model(input_ids=x[:, :-1], output_router_logits=False).logits.float()
            long_total += float(torch.nn.functional.cross_entropy(logits[0, short_seq:], x[0, short_seq + 1:],
                                                                  reduction="sum"))
            for start in range(short_seq, long_seq, short_seq):
                y = x[:, start:start + short_seq + 1]
                logits = model(input_ids=y[:, :-1], output_router_logits=False).logits.float()
                short_total += float(torch.nn.functional.cross_entropy(logits[0], y[0, 1:], reduction="sum"))
            count += long_seq - short_seq
    model.train()
    return long_total / max(count, 1), short_total / max(count, 1)


def mixtral_state_dict(model, layers, experts, dtype):
    """The trained weights under the original Mixtral checkpoint names, per expert, in `dtype`."""
    out = {}
    for name, t in model.state_dict().items():
        if name == "lm_head.weight":
            continue  # tied to the embeddings
        if ".mlp.experts." in name:
            continue
        out[name.replace(".mlp.gate.", ".block_sparse_moe.gate.")] = t
    for layer in range(layers):
        p = f"model.layers.{layer}."
        gate_up = model.state_dict()[p + "mlp.experts.gate_up_proj"]  # [E, 2 * I, H]: w1 rows, then w3
        down = model.state_dict()[p + "mlp.experts.down_proj"]        # [E, H, I]
        inter = gate_up.shape[1] // 2
        for e in range(experts):
            ex = p + f"block_sparse_moe.experts.{e}."
            out[ex + "w1.weight"] = gate_up[e, :inter]
            out[ex + "w3.weight"] = gate_up[e, inter:]
            out[ex + "w2.weight"] = down[e]
    return {k: v.detach().to(dtype).contiguous() for k, v in out.items()}


def plot_curve(path, log, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 3.8))
    steps = [r["step"] for r in log["train"]]
    ax.plot(steps, [r["lm_loss"] for r in log["train"]], lw=0.8, alpha=0.6, label="training (LM loss, per 25 steps)")
    ax.plot([r["step"] for r in log["held_out"]], [r["loss"] for r in log["held_out"]], "o-", label="held out")
    ax.axhline(math.log(log["bigram_perplexity"]), color="grey", ls=":", label="bigram baseline, held out")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv=None):
    a = parse_args(argv)
    versions = check_versions(a.strict_versions)
    torch.set_num_threads(a.threads)
    random.seed(a.seed)
    np.random.seed(a.seed)
    torch.manual_seed(a.seed)
    autocast = not a.no_bf16 and torch.backends.mkldnn.is_available()
    t_start = time.time()

    sp = sentencepiece.SentencePieceProcessor(model_file=TOKENIZER)
    files = list_corpus(a.corpus)
    corpus_hash = hashlib.sha256("".join(f"{h}  {r}\n" for r, h in files).encode()).hexdigest()
    train_files = [r for r, _ in files if not held_out(r)]
    test_files = [r for r, _ in files if held_out(r)]
    rng = random.Random(a.seed)
    rng.shuffle(train_files)
    train = tokenize(train_files, sp)
    test = tokenize(sorted(test_files), sp)
    print(f"corpus {' '.join(a.corpus)}: {len(files)} files ({len(train_files)} train, {len(test_files)} held out), "
          f"{len(train):,} + {len(test):,} tokens; sha256 of the list {corpus_hash[:16]}...", flush=True)
    bigram = bigram_perplexity(train, test, 32000)
    print(f"bigram baseline: held-out perplexity {bigram:.2f}", flush=True)

    config = make_config(a)
    earlier = None
    if a.init:
        model = MixtralForCausalLM.from_pretrained(a.init, config=config, dtype=torch.float32)
        with open(os.path.join(a.init, "training.json")) as f:
            earlier = json.load(f)
        earlier = {k: earlier[k] for k in ("training", "results", "versions", "command") if k in earlier}
        print(f"continuing from {a.init} ({earlier.get('training', {}).get('tokens_seen', 0):,} tokens seen)", flush=True)
    else:
        model = MixtralForCausalLM(config)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=a.lr, betas=(0.9, 0.95))

    def lr_at(step):
        if step < a.warmup:
            return a.lr * (step + 1) / a.warmup
        t = (step - a.warmup) / max(1, a.steps - a.warmup)
        return a.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))

    log = {"train": [], "held_out": []}
    windows = np.random.Generator(np.random.PCG64(a.seed))
    tokens_seen = 0
    t_train = time.time()
    acc = {"loss": 0.0, "lm": 0.0, "aux": 0.0, "n": 0}
    for step in range(a.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        starts = windows.integers(0, len(train) - a.seq - 1, size=a.batch)
        x = torch.from_numpy(np.stack([train[s:s + a.seq + 1] for s in starts]).astype(np.int64))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = model(input_ids=x[:, :-1])
            logits = out.logits.float()
            lm = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
            aux = switch_balancing_loss(out.router_logits, a.top_k, a.aux_loss == "per-layer")
            loss = lm + a.aux_loss_coef * aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        tokens_seen += a.batch * a.seq
        acc["loss"] += loss.item()
        acc["lm"] += lm.item()
        acc["aux"] += aux.item()
        acc["n"] += 1
        if (step + 1) % 25 == 0:
            n = acc["n"]
            log["train"].append({"step": step + 1, "loss": acc["loss"] / n, "lm_loss": acc["lm"] / n,
                                 "aux_loss": acc["aux"] / n, "lr": lr_at(step),
                                 "seconds": time.time() - t_train})
            acc = {"loss": 0.0, "lm": 0.0, "aux": 0.0, "n": 0}
            r = log["train"][-1]
            rate = tokens_seen / (time.time() - t_train)
            print(f"step {step + 1}/{a.steps}: lm loss {r['lm_loss']:.3f}, aux {r['aux_loss']:.3f}, "
                  f"lr {r['lr']:.2e}, {rate:.0f} tokens/s", flush=True)
        if (step + 1) % a.eval_every == 0 and step + 1 < a.steps:
            h = evaluate(model, test, a.seq, a.eval_windows, autocast)
            log["held_out"].append({"step": step + 1, "loss": h, "windows": a.eval_windows})
            print(f"  held out ({a.eval_windows} windows): loss {h:.3f}, perplexity {math.exp(h):.2f}", flush=True)
    train_seconds = time.time() - t_train
    final = evaluate(model, test, a.seq, 0, autocast)
    n_windows = (len(test) - 1) // a.seq
    log["held_out"].append({"step": a.steps, "loss": final, "windows": n_windows})
    log["bigram_perplexity"] = bigram
    print(f"held out, all {n_windows} windows: loss {final:.4f}, perplexity {math.exp(final):.2f} "
          f"(bigram {bigram:.2f})", flush=True)
    # Does more context help? The same tokens in one max_pos context and in fresh 512-token windows.
    context_long, context_short = context_evaluation(model, test, min(a.max_pos, a.seq), 512, 48, autocast)
    print(f"held out, the same tokens: loss {context_long:.4f} in {min(a.max_pos, a.seq)}-token contexts, "
          f"{context_short:.4f} in fresh 512-token windows", flush=True)

    # The checkpoint, in Hugging Face's original Mixtral layout, BF16.
    os.makedirs(a.out, exist_ok=True)
    tensors = mixtral_state_dict(model, a.layers, a.experts, torch.bfloat16)
    save_file(tensors, os.path.join(a.out, "model.safetensors"), metadata={"format": "pt"})
    # config.json as scripts/make_model.py writes every checkpoint of this project (the fields
    # transformers' MixtralConfig reads, rope_theta at the top level).
    cfg = make_model.make_config(dict(
        make_model.DEFAULTS, hidden=a.hidden, intermediate=a.intermediate, layers=a.layers, heads=a.heads,
        kv_heads=a.kv_heads, experts=a.experts, top_k=a.top_k, vocab=32000, rope_theta=a.rope_theta,
        max_pos=a.max_pos, dtype="bf16", tie_embeddings=True))
    cfg["router_aux_loss_coef"] = a.aux_loss_coef
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    shutil.copyfile(TOKENIZER, os.path.join(a.out, "tokenizer.model"))

    # Read back as anyone would, and held against the trained weights rounded the same way.
    loaded = MixtralForCausalLM.from_pretrained(a.out, dtype=torch.float32)
    loaded.eval()
    model.eval()
    rounded = MixtralForCausalLM(config)
    rounded.load_state_dict({k: v.to(torch.bfloat16).float() for k, v in model.state_dict().items()})
    rounded.eval()
    probe = torch.from_numpy(test[:129].astype(np.int64))[None]
    with torch.no_grad():
        diff = float((loaded(input_ids=probe).logits - rounded(input_ids=probe).logits).abs().max())
    if diff > 1e-3:
        sys.exit(f"train_demo_model.py: the written checkpoint's logits differ by {diff} from the trained model's")
    bf16_loss = evaluate(loaded, test, a.seq, 0, False)

    samples = {}
    with torch.no_grad():
        for prompt in SAMPLE_PROMPTS:
            ids = torch.tensor([[BOS] + sp.encode(prompt)])
            out = loaded.generate(ids, max_new_tokens=48, do_sample=False, pad_token_id=EOS)
            samples[prompt] = sp.decode(out[0, ids.shape[1]:].tolist())
    size = os.path.getsize(os.path.join(a.out, "model.safetensors"))
    report = {
        "corpus": {"roots": a.corpus, "debian_packages": debian_packages(a.corpus, files),
                   "files": len(files), "list_sha256": corpus_hash,
                   "split": f"held out: sha256(the file's absolute path) mod {HELD_OUT_MODULUS} == 0",
                   "train_files": len(train_files), "held_out_files": sorted(test_files),
                   "train_tokens": int(len(train)), "held_out_tokens": int(len(test))},
        "model": {"parameters": n_params, "checkpoint_bytes": size, "dtype": "bfloat16",
                  "config": {k: cfg[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers",
                                                 "num_attention_heads", "num_key_value_heads", "num_local_experts",
                                                 "num_experts_per_tok", "vocab_size", "max_position_embeddings",
                                                 "rope_theta", "tie_word_embeddings", "router_aux_loss_coef")}},
        "training": {"steps": a.steps, "batch": a.batch, "seq": a.seq, "tokens_seen": tokens_seen,
                     "aux_loss": f"Switch load balancing, {a.aux_loss}",
                     "epochs": tokens_seen / len(train), "lr": a.lr, "warmup": a.warmup,
                     "schedule": "linear warm-up, cosine to 10%", "optimizer": "AdamW(0.9, 0.95)",
                     "weight_decay": a.weight_decay, "grad_clip": 1.0, "seed": a.seed,
                     "bf16_autocast": autocast, "threads": a.threads, "train_seconds": train_seconds,
                     "total_seconds": time.time() - t_start},
        "results": {"held_out_loss": final, "held_out_perplexity": math.exp(final),
                    "held_out_perplexity_bf16_checkpoint": math.exp(bf16_loss),
                    "bigram_perplexity": bigram, "checkpoint_logit_check_max_abs_diff": diff,
                    "context_check": {"long_context": min(a.max_pos, a.seq), "short_window": 512,
                                      "loss_long_context": context_long, "loss_short_windows": context_short},
                    "greedy_samples": samples},
        "earlier_phase": earlier,
        "log": log,
        "versions": dict(versions, python=platform.python_version(), machine=platform.processor() or platform.machine()),
        "command": " ".join([os.path.basename(sys.argv[0])] + (argv if argv is not None else sys.argv[1:])),
    }
    with open(os.path.join(a.out, "training.json"), "w") as f:
        json.dump(report, f, indent=1)
    plot_curve(os.path.join(a.out, "loss_curve.png"), log,
               f"{n_params / 1e6:.1f}M-parameter Mixtral on Python code: {tokens_seen / 1e6:.1f}M tokens, "
               f"{train_seconds / 60:.0f} min")
    print(json.dumps(report["results"], indent=1))
    print(f"wrote {a.out} ({size / 1e6:.1f} MB checkpoint) in {(time.time() - t_start) / 60:.1f} min")


if __name__ == "__main__":
    main()
