#!/usr/bin/env python3
"""Tiny, independent numpy reference forward pass for HF-layout Mixtral checkpoints.

Needs only numpy (works with Debian's /usr/bin/python3). Written from the
architecture description, not from transformers' code, and used by
make_goldens.py to cross-check the transformers goldens. Computes in float64.

    python3 scripts/reference_forward.py MODEL_DIR 1 17 42 99   # prints argmax per position
    python3 scripts/reference_forward.py MODEL_DIR --golden tests/golden/CASE  # compares to goldens

Semantics implemented (the ones an engine must match):
  * RMSNorm: x / sqrt(mean(x^2) + eps) * w
  * RoPE, "rotate_half" (NeoX) convention as in HF checkpoints: for head_dim d,
    inv_freq[i] = theta^(-2i/d), i < d/2; dims (i, i+d/2) form a rotation pair.
  * GQA: query head h uses kv head h // (n_heads / n_kv_heads); scale 1/sqrt(head_dim).
  * Sliding window W: query at position p sees keys p-W+1 .. p (W keys incl. itself).
  * Router: softmax over all experts, take top-k, renormalise the k probabilities
    to sum to 1 (also for k = 1, so its weight is 1.0).
  * Expert: w2( silu(w1 x) * (w3 x) ).
"""

import json
import os
import sys

import numpy as np


def load_safetensors(path):
    """Return {name: float64 array} from a .safetensors file (F32, F16, BF16)."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        raw = data[a:b]
        dt = info["dtype"]
        if dt == "F32":
            x = np.frombuffer(raw, "<f4")
        elif dt == "F16":
            x = np.frombuffer(raw, "<f2")
        elif dt == "BF16":
            x = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            raise ValueError("unsupported dtype %s for %s" % (dt, name))
        out[name] = x.astype(np.float64).reshape(info["shape"])
    return out


def _rms(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def _rope(x, pos, theta):
    # x: [n, heads, d]
    d = x.shape[-1]
    inv = 1.0 / theta ** (np.arange(0, d, 2, dtype=np.float64) / d)
    ang = pos[:, None] * inv[None, :]                    # [n, d/2]
    cos = np.concatenate([np.cos(ang)] * 2, -1)[:, None, :]
    sin = np.concatenate([np.sin(ang)] * 2, -1)[:, None, :]
    rot = np.concatenate([-x[..., d // 2:], x[..., : d // 2]], -1)
    return x * cos + rot * sin


def quantize_activations(x, block=64):
    """x [n, k] as the quantized kernels multiply it (kernels/quant.h): each row in blocks of
    `block` along k, levels round-half-even(x * (1 / d)) with d = max|x| / 127, all in float32
    as the engine computes them; returns the dequantized values d * level (float64)."""
    x32 = np.asarray(x, dtype=np.float32)
    n, k = x32.shape
    out = np.empty((n, k), dtype=np.float64)
    for b0 in range(0, k, block):
        v = x32[:, b0:b0 + block]
        d = (np.abs(v).max(axis=1, keepdims=True) / np.float32(127)).astype(np.float32)
        inv = np.where(d > 0, np.float32(1) / np.where(d > 0, d, np.float32(1)), np.float32(0)).astype(np.float32)
        levels = np.rint((v * inv).astype(np.float32))
        out[:, b0:b0 + block] = levels.astype(np.float64) * d.astype(np.float64)
    return out


def forward(model_dir, ids, window_override="config", return_routing=False, weights=None,
            quantized=()):
    """Logits [n, vocab] (float64) for token ids `ids` (positions 0..n-1).

    window_override: "config" uses config.json's sliding_window; otherwise
    an int or None replaces it (used to test which window rule matches).
    weights: {name: float64 array} to use instead of model_dir's model.safetensors (a quantized
    checkpoint dequantized, say). quantized: the classes ("experts", "attention", "lm_head")
    whose products take quantize_activations(x) instead of x, as the engine's quantized
    kernels do.
    """
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    W = weights if weights is not None else load_safetensors(os.path.join(model_dir, "model.safetensors"))
    aq = lambda v, cls: quantize_activations(v) if cls in quantized else v  # noqa: E731
    H = cfg["hidden_size"]
    nh, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or H // nh
    E, K = cfg["num_local_experts"], cfg["num_experts_per_tok"]
    eps, theta = cfg["rms_norm_eps"], cfg["rope_theta"]
    win = cfg.get("sliding_window") if window_override == "config" else window_override
    ids = np.asarray(ids)
    n = len(ids)
    pos = np.arange(n, dtype=np.float64)
    q_i = np.arange(n)[:, None]
    k_i = np.arange(n)[None, :]
    allowed = k_i <= q_i
    if win is not None:
        allowed &= k_i > q_i - win
    x = W["model.embed_tokens.weight"][ids]
    routing = []
    for l in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % l
        h = _rms(x, W[p + "input_layernorm.weight"], eps)
        ha = aq(h, "attention")
        q = (ha @ W[p + "self_attn.q_proj.weight"].T).reshape(n, nh, hd)
        k = (ha @ W[p + "self_attn.k_proj.weight"].T).reshape(n, nkv, hd)
        v = (ha @ W[p + "self_attn.v_proj.weight"].T).reshape(n, nkv, hd)
        q, k = _rope(q, pos, theta), _rope(k, pos, theta)
        att = np.empty((n, nh, hd))
        for hh in range(nh):
            g = hh // (nh // nkv)
            s = (q[:, hh, :] @ k[:, g, :].T) / np.sqrt(hd)
            s = np.where(allowed, s, -np.inf)
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            att[:, hh, :] = s @ v[:, g, :]
        x = x + aq(att.reshape(n, nh * hd), "attention") @ W[p + "self_attn.o_proj.weight"].T
        h = _rms(x, W[p + "post_attention_layernorm.weight"], eps)
        logits = h @ W[p + "block_sparse_moe.gate.weight"].T
        pr = np.exp(logits - logits.max(-1, keepdims=True))
        pr /= pr.sum(-1, keepdims=True)
        top = np.argsort(-pr, axis=-1, kind="stable")[:, :K]
        tw = np.take_along_axis(pr, top, -1)
        tw /= tw.sum(-1, keepdims=True)
        routing.append(top)
        moe = np.zeros_like(x)
        he = aq(h, "experts")
        for t in range(n):
            for j in range(K):
                e = top[t, j]
                ep = p + "block_sparse_moe.experts.%d." % e
                a = W[ep + "w1.weight"] @ he[t]
                a = a / (1.0 + np.exp(-a)) * (W[ep + "w3.weight"] @ he[t])
                moe[t] += tw[t, j] * (W[ep + "w2.weight"] @ aq(a[None, :], "experts")[0])
        x = x + moe
    x = _rms(x, W["model.norm.weight"], eps)
    head = W["lm_head.weight"] if "lm_head.weight" in W else W["model.embed_tokens.weight"]
    out = aq(x, "lm_head") @ head.T
    return (out, np.stack(routing)) if return_routing else out


def main(argv):
    if len(argv) < 2:
        print(__doc__)
        return 2
    model_dir = argv[1]
    if len(argv) >= 4 and argv[2] == "--golden":
        gdir = argv[3]
        g = json.load(open(os.path.join(gdir, "golden.json")))
        worst = 0.0
        for i, ids in enumerate(g["prompts"]):
            ref = forward(model_dir, ids)
            gold = np.load(os.path.join(gdir, "logits_%d.npy" % i)).astype(np.float64)
            err = np.abs(ref - gold).max() / max(1.0, np.abs(gold).max())
            worst = max(worst, err)
            print("prompt %d (%d tokens): max|ref-golden|/max(1,max|golden|) = %.3g, argmax agree %s"
                  % (i, len(ids), err, bool((ref.argmax(-1) == gold.argmax(-1)).all())))
        return 0 if worst < 1e-4 else 1
    ids = [int(t) for t in argv[2:]]
    print(" ".join(str(int(t)) for t in forward(model_dir, ids).argmax(-1)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
