#!/usr/bin/env python3
"""Write a random Mixtral checkpoint in Hugging Face layout.

Output directory contents:
  config.json        fields of transformers' MixtralConfig
  model.safetensors  HF tensor names (model.layers.N.block_sparse_moe.experts.E.w1.weight, ...)
  tokenizer.model    only with --tokenizer PATH (a plain copy of that file)

Needs only the Python 3 standard library and numpy (works with Debian 12's
/usr/bin/python3 and numpy 1.24). Usable from the command line or as a module:

    import make_model
    info = make_model.write_model("/tmp/m", hidden=64, experts=8, dtype="bf16")

The safetensors file is written streaming: the header is computed from the
shapes first, then each tensor is generated and written in row blocks of at
most 64 MB, so even a multi-GB "Mixtral slice" needs little memory.

Determinism: every tensor has its own random stream,
numpy.random.default_rng(SeedSequence([seed, crc32(name)])), drawn in row-major
order with standard_normal(dtype=float32) and then scaled. A tensor's values
depend only on --seed, its name, its shape and --init (and --router-skew for
the embedding and gate tensors), never on the chunk size or the other tensors.

Initialisations (std = standard deviation of a zero-mean normal):
  sensitive (default; meant to make logits sensitive to every part of the model)
      embed_tokens            N(0, 1)
      *norm.weight            1 + 0.1 * N(0, 1)
      q_proj, k_proj          std 3/sqrt(fan_in)   (sharp, non-uniform attention)
      block_sparse_moe.gate   std R/sqrt(fan_in), R = --router-scale (default 3; decisive routing)
      lm_head                 std 3/sqrt(fan_in)
      everything else         std 1/sqrt(fan_in)   (v_proj, o_proj, w1, w2, w3)
  hf  (like transformers' _init_weights)
      every linear and the embeddings std 0.02 (initializer_range), norms 1.

--router-skew S (default 0 = off): makes routing prefer low-numbered experts,
roughly with prior weight ~ 1/(e+1)^S for expert e. The router has no bias
term, so a bias is emulated: a fixed unit direction d (random, from the seed)
is added to every embedding row with length emb_std*sqrt(hidden) (so the
residual stream carries a large common component along d), the random part of
the gate, v_proj, w1 and w3 rows along d is projected out (so attention and
experts do not turn the common component into random offsets), and gate row e
gets  + S * ln(1/(e+1)) * d / sqrt(hidden/2)
which shifts the router logit of expert e by about S*ln(1/(e+1)) for inputs
dominated by the embedding (approximate: the norm weights and the growth of
the residual stream change the scale). With tied embeddings the common direction
adds the same value to every logit of a token, so it does not change the
output distribution.

BF16 is produced from float32 by round-to-nearest-even on the bit pattern:
  bf16 = (u32 + 0x7FFF + ((u32 >> 16) & 1)) >> 16
F16 uses numpy's float32 -> float16 conversion (also round-to-nearest-even).
"""

import argparse
import json
import math
import os
import shutil
import sys
import time
import zlib

import numpy as np

CHUNK_BYTES = 64 << 20  # float32 bytes per generated block

_DTYPES = {
    # name: (safetensors dtype, bytes per element, torch_dtype string)
    "f32": ("F32", 4, "float32"),
    "bf16": ("BF16", 2, "bfloat16"),
    "f16": ("F16", 2, "float16"),
}


def _tensor_specs(p):
    """Return {name: (shape, kind, fan_in)} for the model described by params p."""
    H, I, E, V = p["hidden"], p["intermediate"], p["experts"], p["vocab"]
    nh, nkv = p["heads"], p["kv_heads"]
    hd = p["head_dim"] if p["head_dim"] is not None else H // nh
    specs = {"model.embed_tokens.weight": ((V, H), "embed", H), "model.norm.weight": ((H,), "norm", H)}
    if not p["tie_embeddings"]:
        specs["lm_head.weight"] = ((V, H), "lm_head", H)
    for i in range(p["layers"]):
        pre = "model.layers.%d." % i
        specs[pre + "input_layernorm.weight"] = ((H,), "norm", H)
        specs[pre + "post_attention_layernorm.weight"] = ((H,), "norm", H)
        specs[pre + "self_attn.q_proj.weight"] = ((nh * hd, H), "qk", H)
        specs[pre + "self_attn.k_proj.weight"] = ((nkv * hd, H), "qk", H)
        specs[pre + "self_attn.v_proj.weight"] = ((nkv * hd, H), "linear", H)
        specs[pre + "self_attn.o_proj.weight"] = ((H, nh * hd), "linear", nh * hd)
        specs[pre + "block_sparse_moe.gate.weight"] = ((E, H), "gate", H)
        for e in range(E):
            ex = pre + "block_sparse_moe.experts.%d." % e
            specs[ex + "w1.weight"] = ((I, H), "linear", H)
            specs[ex + "w2.weight"] = ((H, I), "linear", I)
            specs[ex + "w3.weight"] = ((I, H), "linear", H)
    return specs


def _init_rule(kind, fan_in, init, router_scale=3.0):
    """Return (mean offset, std) for a tensor kind."""
    if init == "hf":
        return (1.0, 0.0) if kind == "norm" else (0.0, 0.02)
    if kind == "embed":
        return 0.0, 1.0
    if kind == "norm":
        return 1.0, 0.1
    if kind == "gate":
        return 0.0, router_scale / math.sqrt(fan_in)
    if kind in ("qk", "lm_head"):
        return 0.0, 3.0 / math.sqrt(fan_in)
    return 0.0, 1.0 / math.sqrt(fan_in)


def _rng_for(seed, name):
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, zlib.crc32(name.encode())])))


def _to_bytes(x, dtype):
    """Convert a float32 array (may be modified in place) to the file's little-endian bytes."""
    if dtype == "f32":
        return x.astype("<f4", copy=False)
    if dtype == "f16":
        return x.astype("<f2")
    u = x.view(np.uint32)
    t = u >> 16
    t &= 1
    t += 0x7FFF
    u += t
    u >>= 16
    return u.astype("<u2")


def _skew_direction(seed, hidden):
    d = _rng_for(seed, "__router_skew_direction__").standard_normal(hidden, dtype=np.float32)
    return (d / np.linalg.norm(d)).astype(np.float32)


def _write_tensor(f, name, shape, kind, fan_in, p):
    mean, std = _init_rule(kind, fan_in, p["init"], p["router_scale"])
    rng = _rng_for(p["seed"], name)
    rows = shape[0]
    cols = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    if len(shape) == 1:  # 1-D: one block, a single row of `rows` values
        rows, cols = 1, shape[0]
    skew = p["router_skew"]
    reads_d = kind == "gate" or name.endswith(("v_proj.weight", "w1.weight", "w3.weight"))
    d = _skew_direction(p["seed"], p["hidden"]) if skew > 0 and (kind == "embed" or reads_d) else None
    emb_std = _init_rule("embed", p["hidden"], p["init"])[1]
    block = max(1, CHUNK_BYTES // (cols * 4))
    for r0 in range(0, rows, block):
        n = min(block, rows - r0)
        x = rng.standard_normal((n, cols), dtype=np.float32)
        if std != 1.0:
            x *= np.float32(std)
        if mean != 0.0:
            x += np.float32(mean)
        if d is not None and kind == "embed":
            x += np.float32(emb_std * math.sqrt(p["hidden"])) * d
        if d is not None and reads_d:
            x -= (x @ d)[:, None] * d[None, :]  # these rows ignore the common direction d
        if d is not None and kind == "gate":
            e = np.arange(r0, r0 + n, dtype=np.float64)
            shift = skew * np.log(1.0 / (e + 1.0)) / math.sqrt(p["hidden"] / 2.0)
            x += (shift[:, None] * d[None, :]).astype(np.float32)
        f.write(memoryview(np.ascontiguousarray(_to_bytes(x, p["dtype"]))).cast("B"))


DEFAULTS = dict(
    hidden=64, intermediate=96, layers=2, heads=4, kv_heads=2, head_dim=None, experts=8, top_k=2,
    vocab=1000, sliding_window=None, rope_theta=1e6, max_pos=4096, rms_eps=1e-5, dtype="f32", seed=0,
    tie_embeddings=False, init="sensitive", router_scale=3.0, router_skew=0.0, bos=1, eos=2, tokenizer=None,
)


def make_config(p):
    """The config.json dict for params p (fields of transformers' MixtralConfig)."""
    cfg = {
        "architectures": ["MixtralForCausalLM"],
        "model_type": "mixtral",
        "hidden_size": p["hidden"],
        "intermediate_size": p["intermediate"],
        "num_hidden_layers": p["layers"],
        "num_attention_heads": p["heads"],
        "num_key_value_heads": p["kv_heads"],
    }
    if p["head_dim"] is not None:
        cfg["head_dim"] = p["head_dim"]
    cfg.update({
        "num_local_experts": p["experts"],
        "num_experts_per_tok": p["top_k"],
        "vocab_size": p["vocab"],
        "rope_theta": float(p["rope_theta"]),
        "rms_norm_eps": float(p["rms_eps"]),
        "sliding_window": p["sliding_window"],
        "max_position_embeddings": p["max_pos"],
        "bos_token_id": p["bos"],
        "eos_token_id": p["eos"],
        "tie_word_embeddings": bool(p["tie_embeddings"]),
        "hidden_act": "silu",
        "torch_dtype": _DTYPES[p["dtype"]][2],
        "router_aux_loss_coef": 0.02,
        "output_router_logits": False,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "use_cache": True,
    })
    return cfg


def _check(p):
    if p["dtype"] not in _DTYPES:
        raise ValueError("dtype must be one of %s" % sorted(_DTYPES))
    if p["init"] not in ("sensitive", "hf"):
        raise ValueError("init must be 'sensitive' or 'hf'")
    if p["heads"] % p["kv_heads"]:
        raise ValueError("heads must be a multiple of kv_heads")
    if p["head_dim"] is None and p["hidden"] % p["heads"]:
        raise ValueError("hidden must be a multiple of heads when head_dim is not given")
    hd = p["head_dim"] if p["head_dim"] is not None else p["hidden"] // p["heads"]
    if hd % 2:
        raise ValueError("head_dim must be even (RoPE)")
    if not 1 <= p["top_k"] <= p["experts"]:
        raise ValueError("need 1 <= top_k <= experts")
    if p["router_skew"] < 0:
        raise ValueError("router_skew must be >= 0")


def write_model(out_dir, **params):
    """Write config.json + model.safetensors (+ tokenizer.model) into out_dir.

    Keyword params are those of DEFAULTS (hidden, intermediate, layers, heads,
    kv_heads, head_dim, experts, top_k, vocab, sliding_window, rope_theta,
    max_pos, rms_eps, dtype, seed, tie_embeddings, init, router_scale, router_skew, bos, eos,
    tokenizer). Returns a dict with path, params, bytes, seconds, config.
    """
    unknown = set(params) - set(DEFAULTS)
    if unknown:
        raise TypeError("unknown parameters: %s" % sorted(unknown))
    p = dict(DEFAULTS)
    p.update(params)
    _check(p)
    t0 = time.time()
    os.makedirs(out_dir, exist_ok=True)
    cfg = make_config(p)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")

    st_dtype, esize, _ = _DTYPES[p["dtype"]]
    specs = _tensor_specs(p)
    names = sorted(specs)
    header = {"__metadata__": {"format": "pt"}}
    off = 0
    n_params = 0
    for name in names:
        shape = specs[name][0]
        n = int(np.prod(shape))
        n_params += n
        header[name] = {"dtype": st_dtype, "shape": list(shape), "data_offsets": [off, off + n * esize]}
        off += n * esize
    hbytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hbytes += b" " * (-len(hbytes) % 8)

    path = os.path.join(out_dir, "model.safetensors")
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(len(hbytes).to_bytes(8, "little"))
        f.write(hbytes)
        for name in names:
            shape, kind, fan_in = specs[name]
            _write_tensor(f, name, shape, kind, fan_in, p)
        total = f.tell()
    expected = 8 + len(hbytes) + off
    if total != expected:
        raise RuntimeError("wrote %d bytes, expected %d" % (total, expected))
    os.replace(tmp, path)

    if p["tokenizer"]:
        shutil.copyfile(p["tokenizer"], os.path.join(out_dir, "tokenizer.model"))
    return {"path": path, "params": n_params, "bytes": total, "seconds": time.time() - t0, "config": cfg}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output directory (created if missing)")
    ap.add_argument("--hidden", type=int, default=DEFAULTS["hidden"])
    ap.add_argument("--intermediate", type=int, default=DEFAULTS["intermediate"])
    ap.add_argument("--layers", type=int, default=DEFAULTS["layers"])
    ap.add_argument("--heads", type=int, default=DEFAULTS["heads"])
    ap.add_argument("--kv-heads", type=int, default=DEFAULTS["kv_heads"])
    ap.add_argument("--head-dim", type=int, default=None,
                    help="explicit head_dim (written to config.json only when given; default hidden/heads)")
    ap.add_argument("--experts", type=int, default=DEFAULTS["experts"])
    ap.add_argument("--top-k", type=int, default=DEFAULTS["top_k"])
    ap.add_argument("--vocab", type=int, default=DEFAULTS["vocab"])
    ap.add_argument("--sliding-window", type=int, default=None, help="default: null (full attention)")
    ap.add_argument("--rope-theta", type=float, default=DEFAULTS["rope_theta"])
    ap.add_argument("--max-pos", type=int, default=DEFAULTS["max_pos"])
    ap.add_argument("--rms-eps", type=float, default=DEFAULTS["rms_eps"])
    ap.add_argument("--dtype", choices=sorted(_DTYPES), default=DEFAULTS["dtype"])
    ap.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    ap.add_argument("--tie-embeddings", action="store_true", help="tie_word_embeddings=true, no lm_head.weight")
    ap.add_argument("--init", choices=("sensitive", "hf"), default=DEFAULTS["init"])
    ap.add_argument("--router-scale", type=float, default=DEFAULTS["router_scale"],
                    help="sensitive init: router (gate) weight std = R/sqrt(hidden) (default 3)")
    ap.add_argument("--router-skew", type=float, default=DEFAULTS["router_skew"],
                    help="prefer expert e with weight ~ 1/(e+1)^S (0 = off; see module doc)")
    ap.add_argument("--bos", type=int, default=DEFAULTS["bos"])
    ap.add_argument("--eos", type=int, default=DEFAULTS["eos"])
    ap.add_argument("--tokenizer", default=None, help="file copied to OUT/tokenizer.model")
    a = ap.parse_args(argv)
    params = {k: getattr(a, k) for k in DEFAULTS}
    out = a.out
    try:
        info = write_model(out, **params)
    except (ValueError, OSError) as e:
        print("make_model: %s" % e, file=sys.stderr)
        return 1
    print("%s: %d parameters, %d bytes (%s, %.1f s)" % (info["path"], info["params"], info["bytes"],
                                                       a.dtype, info["seconds"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
