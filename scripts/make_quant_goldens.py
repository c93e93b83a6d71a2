#!/usr/bin/env python3
"""Goldens for the quantized formats: the demo model's quantized logits from an independent
float64 reference, for tests/golden/golden_test.cc.

NOT on the CI path (CI reads what this writes). Needs Debian's python3 + numpy and a build:

    /usr/bin/python3 scripts/make_quant_goldens.py build/bin     # writes tests/golden/pystd_int8, _int4

For each format this script
  1. writes the quantized checkpoint with the engine's own moe-quantize (the levels and scales the
     engine computes when it quantizes at load: the same code),
  2. reads it back with its own parser and dequantizes it by the format's written definition
     (core/model/quantized_checkpoint.h), independently of the C++ loader,
  3. runs scripts/reference_forward.py (float64 numpy, checked against transformers by
     make_goldens.py) on the dequantized weights, twice: with the activations of every quantized
     product quantized as the kernels do (per row, blocks of 64, round half to even: the golden),
     and with float activations (what the format alone costs),
  4. writes logits_<i>.npy (the first, float32 [tokens, vocab]), experts_<i>.npy and golden.json
     (with both runs' distance to the 16-bit model's golden logits).
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import reference_forward  # noqa: E402

FORMATS = {
    "int8": ("int8", ("experts", "attention", "lm_head")),
    "int4": ("int4", ("experts", "attention", "lm_head")),  # attention and lm_head INT8 (the preset)
}
BLOCK = 64


def read_safetensors_raw(path):
    """{name: (dtype, shape, bytes)} of one file."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        out[name] = (info["dtype"], info["shape"], data[a:b])
    return out


def as_float(dtype, shape, raw):
    if dtype == "F32":
        x = np.frombuffer(raw, "<f4")
    elif dtype == "F16":
        x = np.frombuffer(raw, "<f2")
    elif dtype == "BF16":
        x = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)
    else:
        raise ValueError(dtype)
    return x.astype(np.float64).reshape(shape)


def dequantized_checkpoint(qdir):
    """The quantized checkpoint's weights in float64, by the format's definition:
    INT8: NAME I8 [rows, cols], NAME_scale F32 [rows]: w = scale * q.
    INT4: NAME U8 [rows, ceil(cols/2)] (low nibble first), NAME_scale, NAME_min F16
    [rows, ceil(cols/64)]: w = scale * q + min."""
    raw = read_safetensors_raw(os.path.join(qdir, "model.safetensors"))
    out = {}
    for name, (dtype, shape, data) in raw.items():
        if name.endswith("_scale") or name.endswith("_min"):
            continue
        if dtype == "I8":
            q = np.frombuffer(data, np.int8).reshape(shape).astype(np.float64)
            scale = as_float(*raw[name + "_scale"])
            out[name] = scale[:, None] * q
        elif dtype == "U8":
            # Two levels a byte; the demo model's widths are even, so no half byte is padding.
            packed = np.frombuffer(data, np.uint8).reshape(shape)
            levels = np.stack([packed & 0xF, packed >> 4], axis=-1).reshape(shape[0], -1).astype(np.float64)
            scale = as_float(*raw[name + "_scale"])
            mins = as_float(*raw[name + "_min"])
            group = np.arange(levels.shape[1]) // BLOCK
            out[name] = scale[:, group] * levels + mins[:, group]
        else:
            out[name] = as_float(dtype, shape, data)
    return out


def rel_err(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def main(argv):
    if len(argv) != 1:
        print(__doc__)
        return 2
    bin_dir = os.path.abspath(argv[0])
    model = os.path.join(ROOT, "deploy", "models", "pystd")
    base = json.load(open(os.path.join(ROOT, "tests", "golden", "pystd", "golden.json")))
    for name, (spec, classes) in FORMATS.items():
        with tempfile.TemporaryDirectory() as tmp:
            qdir = os.path.join(tmp, "q")
            subprocess.run([os.path.join(bin_dir, "moe-quantize"), "--model", model, "--out", qdir,
                            "--quantize", spec], check=True, capture_output=True)
            weights = dequantized_checkpoint(qdir)
            formats = json.load(open(os.path.join(qdir, "config.json")))["quantization_config"]
        quantized = tuple(c for c in classes if formats[c] != "stored")
        out_dir = os.path.join(ROOT, "tests", "golden", "pystd_" + name)
        shutil.rmtree(out_dir, ignore_errors=True)
        os.makedirs(out_dir)
        record = {"case": "pystd_" + name,
                  "description": "deploy/models/pystd held with --quantize %s; logits of the float64 reference "
                                 "(scripts/reference_forward.py) on the dequantized checkpoint moe-quantize "
                                 "writes, every quantized product's activations quantized as the kernels do "
                                 "(per row, blocks of 64)" % spec,
                  "model_dir": "deploy/models/pystd",
                  "quantize": spec,
                  "formats": {c: formats[c] for c in ("experts", "attention", "lm_head")},
                  "reference": "scripts/reference_forward.py (float64) via scripts/make_quant_goldens.py",
                  "numpy": np.__version__,
                  "prompts": base["prompts"], "prompt_texts": base["prompt_texts"],
                  "float_activations_rel_err": [], "vs_16bit_golden_rel_err": []}
        for i, ids in enumerate(base["prompts"]):
            logits, routing = reference_forward.forward(model, ids, return_routing=True, weights=weights,
                                                        quantized=quantized)
            float_acts = reference_forward.forward(model, ids, weights=weights)
            sixteen = np.load(os.path.join(ROOT, "tests", "golden", "pystd", "logits_%d.npy" % i)).astype(np.float64)
            np.save(os.path.join(out_dir, "logits_%d.npy" % i), logits.astype(np.float32))
            np.save(os.path.join(out_dir, "experts_%d.npy" % i), routing.astype(np.int32))
            record["float_activations_rel_err"].append(rel_err(float_acts, logits))
            record["vs_16bit_golden_rel_err"].append(rel_err(logits, sixteen))
            print("pystd_%s prompt %d: quantized activations vs float activations %.2e, vs the 16-bit golden %.2e"
                  % (name, i, record["float_activations_rel_err"][-1], record["vs_16bit_golden_rel_err"][-1]))
        with open(os.path.join(out_dir, "golden.json"), "w") as f:
            json.dump(record, f, indent=1)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
