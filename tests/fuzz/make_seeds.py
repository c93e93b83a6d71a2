#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpus (tests/fuzz/corpus/TARGET/), deterministically, from the
project's own files and small hand-built inputs: one valid input of each shape the parser knows,
a few near misses, and the inputs fuzzing found faults with. The corpus is committed; run this
again after a format changes.

usage: tests/fuzz/make_seeds.py [SOURCE_DIR]
"""
import glob
import json
import os
import struct
import sys

SRC = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(SRC, "scripts"))
from protobuf_wire import fields  # noqa: E402
OUT = os.path.join(SRC, "tests", "fuzz", "corpus")


def put(target, name, data):
    os.makedirs(os.path.join(OUT, target), exist_ok=True)
    with open(os.path.join(OUT, target, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def safetensors(tensors, metadata=None):
    """tensors: [(name, dtype, shape, raw bytes)] -> file bytes."""
    header, data = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def seeds_safetensors():
    f32 = struct.pack("<6f", *range(6))
    put("safetensors", "f32_two", safetensors([("a", "F32", [2, 3], f32), ("b", "F32", [1], f32[:4])],
                                               {"format": "pt"}))
    put("safetensors", "bf16", safetensors([("w", "BF16", [4], b"\x80\x3f" * 4)]))
    put("safetensors", "f16_scalar", safetensors([("s", "F16", [], b"\x00\x3c")]))
    put("safetensors", "empty", safetensors([]))
    put("safetensors", "overlap", safetensors([("a", "F32", [2], f32[:8]), ("b", "F32", [2], f32[:8])])[:-8])


def seeds_config():
    for path in sorted(glob.glob(os.path.join(SRC, "tests", "golden", "*", "config.json"))):
        put("config", os.path.basename(os.path.dirname(path)) + ".json", open(path, "rb").read())
    put("config", "mixtral_8x7b.json", json.dumps({
        "architectures": ["MixtralForCausalLM"], "hidden_size": 4096, "intermediate_size": 14336,
        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
        "num_local_experts": 8, "num_experts_per_tok": 2, "vocab_size": 32000,
        "max_position_embeddings": 32768, "rope_theta": 1e6, "rms_norm_eps": 1e-5,
        "sliding_window": None, "bos_token_id": 1, "eos_token_id": 2, "tie_word_embeddings": False}))


def seeds_tokenizer_model():
    """The real model cut to its first pieces (specials, the 256 byte pieces, the first merges)
    with its trainer and normalizer specs: small enough to fuzz fast, still a working tokenizer."""
    real = open(os.path.join(SRC, "core", "model", "tokenizer", "tokenizer.model"), "rb").read()
    parts = [(f.number, real[f.start:f.end]) for f in fields(real, "tokenizer.model")]
    pieces = [raw for field, raw in parts if field == 1]
    rest = b"".join(raw for field, raw in parts if field != 1)
    put("tokenizer_model", "mixtral_first_400", b"".join(pieces[:400]) + rest)
    put("tokenizer_model", "mixtral_first_270", b"".join(pieces[:270]) + rest)
    put("tokenizer_model", "pieces_only", b"".join(pieces[:300]))


def seeds_placement():
    # 4 bytes of shape (layers-1, experts-1, workers-1, --expert-slots), then the JSON.
    def shaped(layers, experts, workers, budget, text):
        return bytes([layers - 1, experts - 1, workers - 1, budget]) + text.encode()
    for path in sorted(glob.glob(os.path.join(SRC, "deploy", "placement*.json"))):
        obj = json.load(open(path))
        table = obj["experts"] if "experts" in obj else obj["layers"][0]
        workers = max(max(e) if isinstance(e, list) else e for e in table)
        layers = 1 if "experts" in obj else len(obj["layers"])
        put("placement", os.path.basename(path), shaped(layers, len(table), workers, 0, open(path).read()))
    put("placement", "per_layer", shaped(2, 4, 2, 0, '{"layers": [[1, 1, 2, 2], [2, 1, 2, 1]]}'))
    put("placement", "replicas_budget", shaped(1, 4, 2, 3, '{"expert_slots": 3, "experts": [[1, 2], 1, 2, [2, 1]]}'))
    put("placement", "out_of_int", shaped(1, 4, 2, 0, '{"experts": [4294967297, 1, 2, 2]}'))
    # Found by fuzzing (the target's own invariant was wrong): worker 4 sits out layer 1, legally.
    put("placement", "worker_idle_in_a_layer",
        shaped(2, 8, 4, 0, '{"layers": [[1, 1, 2, 2, 3, 3, 4, 4],\n[1, 1, 2, 2, 3, 3, 2, 1]]}\n'))


# The StepHeader as the wire carries it (core/exchange/step_messages.h): 52 bytes of fields, 56 with padding.
STEP = struct.Struct("<IiqiiqqIII4x")
STEP_MAGIC, FORWARD, BEGIN_PLACEMENT = 0x4d6f4553, 1, 3


def seeds_step_messages():
    # The target's placement: 3 layers, {"experts": [[1, 2], 1, 2, 2]}: slots 0, 1 = expert 0 on
    # ranks 1, 2; slot 2 = expert 1 on rank 1; slots 3, 4 = experts 2, 3 on rank 2.
    def step(rank_byte, layer, n_slots, n_rows, counts, ids, command=FORWARD):
        header = STEP.pack(STEP_MAGIC, command, 7, layer, n_slots, n_rows, 16, 1, 10000, 1)
        return (bytes([rank_byte]) + header + struct.pack(f"<{len(counts)}q", *counts)
                + struct.pack(f"<{len(ids)}i", *ids))
    put("step_messages", "rank1_forward", step(0, 1, 5, 3, [2, 0, 1, 0, 0], [0, 0, 2]))
    put("step_messages", "rank2_forward", step(1, 2, 5, 4, [0, 1, 0, 2, 1], [1, 3, 3, 4]))
    put("step_messages", "empty_step", step(0, 0, 5, 0, [0, 0, 0, 0, 0], []))
    put("step_messages", "wrong_label", step(0, 0, 5, 2, [2, 0, 0, 0, 0], [0, 1]))
    table = [3] + [5, 1, 0, 2, 0, 1, 1, 2, 2, 2, 3] * 3
    put("step_messages", "begin_placement",
        bytes([0]) + STEP.pack(STEP_MAGIC, BEGIN_PLACEMENT, 9, 0, 0, len(table), 0, 1, 10000, 2)
        + struct.pack(f"<{len(table)}i", *table))


def seeds_routing_trace():
    # docs/routing-trace-format.md, versions 1 and 2: L=2 layers, E=4 experts, top-2, W=2 workers.
    L, E, k, W = 2, 4, 2, 2
    header_bytes = 64 + ((2 * L * E + 7) // 8) * 8
    weights_at = 32 + ((L * k + 3) // 4) * 4
    entropy_at = weights_at + 4 * L * k

    def record_bytes(version):
        return ((entropy_at + (4 * L if version >= 2 else 0) + 7) // 8) * 8

    def header(version):
        h = b"MOETRACE" + struct.pack("<8Id16x", version, header_bytes, record_bytes(version), L, E, k, W, 0,
                                      1.7e9)
        h += struct.pack(f"<{L * E}h", *([1, 1, 2, 2] * L))
        return h + b"\0" * (header_bytes - len(h))

    def record(version, request, time, step, position, token, experts, prefill):
        flags = 1 if prefill and version >= 2 else 0
        r = struct.pack("<QdIiiBBH", request, time, step, position, token, flags, 0, 0)
        r += bytes(e for layer in experts for e in layer)
        r += b"\0" * (weights_at - len(r))
        r += struct.pack(f"<{L * k}f", *([0.75, 0.25] * L))
        if version >= 2:
            r += struct.pack(f"<{L}f", *([0.9, 1.3][:L]))
        return r + b"\0" * (record_bytes(version) - len(r))

    for version, suffix in ((1, "_v1"), (2, "")):
        body = b"".join(record(version, 1, 0.01 * i, 1 + i // 2, i, 100 + i, [[i % 4, (i + 1) % 4], [3, 0]],
                               prefill=i < 2) for i in range(4))
        put("routing_trace", "two_layers" + suffix, header(version) + body)
        put("routing_trace", "header_only" + suffix, header(version))
        put("routing_trace", "partial_record" + suffix, header(version) + body[:-5])
        single = bytearray(header(version))
        struct.pack_into("<I", single, 32, 0)  # n_workers 0: a single process, placement all 0
        single[64:64 + 2 * L * E] = b"\0" * (2 * L * E)
        put("routing_trace", "single_process" + suffix, bytes(single) + body)


def main():
    # Seeds are rewritten; other files (inputs fuzzing found, added by hand) stay.
    seeds_safetensors()
    seeds_config()
    seeds_tokenizer_model()
    seeds_placement()
    seeds_step_messages()
    seeds_routing_trace()
    for target in sorted(os.listdir(OUT)):
        print(f"{target}: {len(os.listdir(os.path.join(OUT, target)))} seeds")


if __name__ == "__main__":
    main()
