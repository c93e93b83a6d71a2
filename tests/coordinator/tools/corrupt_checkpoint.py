#!/usr/bin/env python3
"""Writes a broken copy of a model directory, for the bad-input tests.

usage: corrupt_checkpoint.py SRC DST MODE
MODE: no-config | bad-json | missing-tensor | wrong-shape | wrong-dtype | truncated |
      offsets-out-of-range | overlapping | absurd-header | zero-length | nan-weight | inf-norm |
      overflow-experts
"""
import json
import os
import shutil
import struct
import sys


def read(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def write(path, header, data):
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + data)


def main():
    src, dst, mode = sys.argv[1:4]
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst)
    st = os.path.join(dst, "model.safetensors")
    cfg = os.path.join(dst, "config.json")
    header, data = read(st)
    if mode == "no-config":
        os.remove(cfg)
    elif mode == "bad-json":
        with open(cfg, "w") as f:
            f.write('{"hidden_size": 64,, }')
    elif mode == "missing-tensor":
        del header["model.layers.1.self_attn.q_proj.weight"]
        write(st, header, data)
    elif mode == "wrong-shape":
        t = header["model.layers.0.block_sparse_moe.experts.1.w2.weight"]
        t["shape"] = list(reversed(t["shape"]))
        write(st, header, data)
    elif mode == "wrong-dtype":
        t = header["model.layers.0.self_attn.k_proj.weight"]
        t["dtype"] = "I32" if t["dtype"] == "F32" else "I16"
        write(st, header, data)
    elif mode == "truncated":
        with open(st, "r+b") as f:
            f.truncate(os.path.getsize(st) // 2)
    elif mode == "offsets-out-of-range":
        t = header["lm_head.weight"]
        t["data_offsets"] = [t["data_offsets"][0] + 10**12, t["data_offsets"][1] + 10**12]
        write(st, header, data)
    elif mode == "overlapping":
        names = sorted(k for k in header if k != "__metadata__")
        a, b = header[names[0]], header[names[1]]
        if a["data_offsets"][1] - a["data_offsets"][0] == b["data_offsets"][1] - b["data_offsets"][0]:
            b["data_offsets"] = list(a["data_offsets"])
        else:
            b["data_offsets"] = [a["data_offsets"][0], a["data_offsets"][0] + b["data_offsets"][1] - b["data_offsets"][0]]
        write(st, header, data)
    elif mode == "absurd-header":
        with open(st, "r+b") as f:
            f.write(struct.pack("<Q", 2**62))
    elif mode in ("nan-weight", "inf-norm"):
        # A NaN at [3, 5] of one expert's w3, or +inf in a norm vector, as its dtype spells them.
        name = ("model.layers.1.block_sparse_moe.experts.2.w3.weight" if mode == "nan-weight"
                else "model.layers.0.post_attention_layernorm.weight")
        t = header[name]
        size, nan, inf = {"F32": (4, b"\x00\x00\xc0\x7f", b"\x00\x00\x80\x7f"),
                          "BF16": (2, b"\xc0\x7f", b"\x80\x7f"),
                          "F16": (2, b"\x00\x7e", b"\x00\x7c")}[t["dtype"]]
        index = 3 * t["shape"][1] + 5 if mode == "nan-weight" else 7
        at = t["data_offsets"][0] + index * size
        data = data[:at] + (nan if mode == "nan-weight" else inf) + data[at + size:]
        write(st, header, data)
    elif mode == "overflow-experts":
        # Finite weights that overflow at run time: every expert of layer 0 at the largest finite
        # value of its dtype, so layer 0's output is Inf or NaN for every token (refusing them at
        # load would be wrong: they are legal numbers).
        size, big = None, None
        for name, t in header.items():
            if not name.startswith("model.layers.0.block_sparse_moe.experts."):
                continue
            size, big = {"F32": (4, b"\xff\xff\x7f\x7f"), "BF16": (2, b"\x7f\x7f"), "F16": (2, b"\xff\x7b")}[t["dtype"]]
            lo, hi = t["data_offsets"]
            data = data[:lo] + big * ((hi - lo) // size) + data[hi:]
        write(st, header, data)
    elif mode == "zero-length":
        open(st, "wb").close()
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
