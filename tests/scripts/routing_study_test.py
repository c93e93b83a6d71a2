#!/usr/bin/env python3
"""Self-check of scripts/token_classes.py and scripts/routing_study.py.

usage: routing_study_test.py SOURCE_DIR WORK_DIR     (Debian python3 with numpy and matplotlib)

Token classes of a hand-classified Python snippet; the tokenizer's pieces read without the
sentencepiece package; the study's figures on a synthetic trace whose routing was built to have
known answers (a class that always picks one expert, a layer that is a function of the previous
one, a known number of repeats), written byte by byte from docs/routing-trace-format.md; the live
telemetry check passing on agreeing counts and failing (exit status 2) on one count off.
Prints "N passed, M failed" and exits non-zero on any failure.
"""
import json
import os
import shutil
import struct
import subprocess
import sys

import numpy as np

SRC, WORK = sys.argv[1], sys.argv[2]
sys.path.insert(0, os.path.join(SRC, "scripts"))
import routing_study  # noqa: E402
import routing_trace as rt  # noqa: E402
import token_classes as tc  # noqa: E402

TOKENIZER = os.path.join(SRC, "core", "model", "tokenizer", "tokenizer.model")
STUDY = os.path.join(SRC, "scripts", "routing_study.py")
results = {"passed": 0, "failed": 0}


def check(name, ok, detail=""):
    results["passed" if ok else "failed"] += 1
    print(("ok: " if ok else "FAIL: ") + name + ("" if ok else f"  ({detail})"))


# Token ids of the snippet below as the Mixtral tokenizer splits it (sentencepiece 0.2.3, BOS
# first), each with its class by hand: ' if' is prose in the comment and a keyword in the
# expression, ' in' prose inside the string, ' index' an identifier although it starts with 'in'.
SNIPPET = [
    (1, "special"), (726, "keyword"), (3497, "identifier"), (13, "whitespace"), (13, "whitespace"),
    (1270, "keyword"), (285, "identifier"), (28732, "punctuation"), (28744, "identifier"),
    (28725, "punctuation"), (2991, "identifier"), (28746, "punctuation"), (28740, "digits"),
    (28734, "digits"), (1329, "punctuation"), (13, "whitespace"), (2287, "whitespace"),
    (422, "punctuation"), (513, "prose"), (272, "prose"), (1192, "prose"), (349, "prose"),
    (297, "prose"), (2819, "prose"), (13, "whitespace"), (2287, "whitespace"), (604, "keyword"),
    (345, "punctuation"), (279, "prose"), (349, "prose"), (297, "prose"), (28739, "punctuation"),
    (648, "punctuation"), (1117, "identifier"), (28732, "punctuation"), (28744, "identifier"),
    (28731, "punctuation"), (513, "keyword"), (1318, "identifier"), (1112, "keyword"), (28705, "whitespace"),
    (28770, "digits"), (28723, "punctuation"), (28782, "digits"), (13, "whitespace"),
]
SNIPPET_TEXT = ('import os\n\ndef f(x, index=10):\n    # if the value is in range\n'
                '    return "it is in" + str(x) if x else 3.5\n')


def test_pieces_and_classes():
    pieces = tc.piece_texts(TOKENIZER)
    check("tokenizer.model: 32000 pieces", len(pieces) == 32000, len(pieces))
    check("control pieces are None, byte <0x0A> is a newline, '▁' a space",
          pieces[0] is None and pieces[1] is None and pieces[2] is None and pieces[13] == "\n"
          and pieces[28705] == " ", [pieces[i] for i in (0, 1, 2, 13, 28705)])
    ids = [t for t, _ in SNIPPET]
    text = "".join(pieces[t] for t in ids if pieces[t] is not None)
    check("the pieces join back into the snippet (after the leading space)", text == " " + SNIPPET_TEXT, repr(text))
    got = [tc.CLASSES[c] for c in tc.classify_sequence(ids, pieces)]
    want = [c for _, c in SNIPPET]
    bad = [(i, pieces[ids[i]], g, w) for i, (g, w) in enumerate(zip(got, want)) if g != w]
    check("every token of the snippet in its hand-given class", not bad, bad[:5])
    mask = tc.prose_mask('x = """cut off here')
    check("a string cut off by the end of the text runs to the end", all(mask[7:]) and not any(mask[:7]),
          list(mask))
    mask = tc.prose_mask("s = 'a\\'b' # c\ny")
    check("escaped quotes stay inside, a comment ends at the line end",
          list(mask) == [0, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 1, 1, 0, 0], list(mask))


# ----------------------------------------------------------------------------------------------
# A version-1 trace whose routing has known answers.

L, E, K, W = 3, 8, 2, 2
PLACEMENT = [[1 if e < 4 else 2 for e in range(E)] for _ in range(L)]


def pack(records):
    header = struct.pack("<8sIIIIIIIId", b"MOETRACE", 1, 64 + 2 * L * E, 32 + 8 + 4 * L * K, L, E, K, W, 0, 1.7e9)
    header += b"\0" * 16 + struct.pack(f"<{L * E}h", *(r for row in PLACEMENT for r in row))
    body = b""
    for req, time, step, pos, tok, experts in records:
        raw = struct.pack("<QdIiiI", req, time, step, pos, tok, 0)
        raw += bytes(e for row in experts for e in row) + b"\0" * (-(L * K) % 4)
        raw += struct.pack(f"<{L * K}f", *([0.75, 0.25] * L))
        body += raw + b"\0" * (-len(raw) % 8)
    return header + body


def routing_for(cls, pos):
    """Whitespace always picks expert 0 first at layer 0, everything else expert 3 or 5 by
    position; each next layer's first choice is the previous one's + 1 (mod E)."""
    first = 0 if cls == "whitespace" else (3 if pos % 2 else 5)
    rows = []
    for layer in range(L):
        a = (first + layer) % E
        rows.append([a, (a + 4) % E])
    return rows


def synthetic_records(requests=3):
    out, step = [], 0
    for req in range(1, requests + 1):
        for pos, (tok, cls) in enumerate(SNIPPET):
            step += 1
            out.append((req, 0.01 * step, step, pos, tok, routing_for(cls, pos)))
    return out


def test_study():
    os.makedirs(WORK, exist_ok=True)
    path = os.path.join(WORK, "known.trace")
    records = synthetic_records()
    with open(path, "wb") as f:
        f.write(pack(records))
    trace = rt.load(path)
    pieces = tc.piece_texts(TOKENIZER)
    fig = routing_study.compute(trace, pieces, time_bins=5)
    ws = next(c for c in fig["classes"] if c["cls"] == "whitespace")
    check("whitespace prefers expert 0 at layer 0 with half its choices (top-2)",
          ws["top_expert"][0] == 0 and abs(ws["top_share"][0] - 0.5) < 1e-12, (ws["top_expert"], ws["top_share"]))
    check("class counts add up to the records", sum(fig["class_counts"].values()) == len(records), fig["class_counts"])
    il = fig["inter_layer"]
    check("layer l+1's first choice is a function of layer l's: predicted 100%",
          all(abs(d["accuracy"] - 1.0) < 1e-12 for d in il), [d["accuracy"] for d in il])
    pairs = fig["pairs"][0]["top"]
    check("the only pairs chosen together are (a, a+4): lift above 1",
          all((p["pair"][1] - p["pair"][0]) == 4 and p["lift"] > 1 for p in pairs), pairs)
    edges, choices, workers = rt.timed_worker_load(trace, 7)
    check("worker load over wall-clock time (worker_load.png): every choice in a bin, on a worker",
          len(edges) == 8 and choices.sum() == len(records) * L * K and (workers.sum(1) == choices).all()
          and edges[0] == trace.records["time"].min() and edges[-1] == trace.records["time"].max(),
          (choices.tolist(), workers.sum(1).tolist()))
    t = fig["time"]
    total = sum(sum(row) for row in t["phases"]["unknown"]["experts"])
    check("load over time: every choice lands in a bin", total == len(records) * L * K, total)
    per_worker = sum(sum(row) for row in t["phases"]["unknown"]["workers"])
    check("load over time: every choice on a worker", per_worker == len(records) * L * K, per_worker)
    # Locality: within a request consecutive non-whitespace tokens alternate 3/5 (never repeat the
    # first choice); count the repeats by hand.
    cls = [c for _, c in SNIPPET]
    firsts = [routing_for(c, p)[0][0] for p, c in enumerate(cls)]
    repeats = sum(a == b for a, b in zip(firsts, firsts[1:])) * 3
    got = fig["base"]["locality"]["layers"][0]["first_choice_repeats"]
    check("layer 0 first-choice repeats as counted by hand", got == repeats, (got, repeats))
    return path, fig


def test_version2():
    """Prefill flags, entropies, labels and step costs from a version-2 trace and its events."""
    path = os.path.join(WORK, "v2.trace")
    rb = 32 + 8 + 4 * L * K + 4 * L
    rb += -rb % 8
    header = struct.pack("<8sIIIIIIIId", b"MOETRACE", 2, 64 + 2 * L * E, rb, L, E, K, W, 0, 1.7e9)
    header += b"\0" * 16 + struct.pack(f"<{L * E}h", *(r for row in PLACEMENT for r in row))
    body, step = b"", 0
    for req in (1, 2):
        for pos in range(12):
            step += 1
            experts = routing_for("identifier", pos)
            raw = struct.pack("<QdIiiBBH", req, 0.01 * step, step, pos, 28744, 1 if pos < 8 else 0, 0, 0)
            raw += bytes(e for row in experts for e in row) + b"\0" * (-(L * K) % 4)
            raw += struct.pack(f"<{L * K}f", *([0.75, 0.25] * L))
            raw += struct.pack(f"<{L}f", *(0.5 + 0.25 * l for l in range(L)))
            body += raw + b"\0" * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(header + body)
    events = [dict(event="sequence", request_id=1, label="chat", prompt_tokens=8, max_tokens=4, time=0.0),
              dict(event="sequence", request_id=2, label="code", prompt_tokens=8, max_tokens=4, time=0.0)]
    for i in range(6):  # three prefill steps with rows 30/10, three decode steps with rows 2/2
        prefill = i < 3
        events.append(dict(event="step", step=i + 1, time=0.01 * i, rows=4, prefill_rows=4 if prefill else 0,
                           exchange_seconds=0.010, worker_compute_seconds=[0.004, 0.002],
                           worker_rows=[30, 10] if prefill else [2, 2],
                           straggler_seconds=0.003 if prefill else 0.001 * i))
    with open(path + ".events.jsonl", "w") as f:
        f.write("".join(json.dumps(e) + "\n" for e in events))
    trace = rt.load(path)
    fig = routing_study.compute(trace, tc.piece_texts(TOKENIZER), rt.load_events(path), time_bins=3)
    check("v2: prefill and decode tokens from the record flags", fig["phases"] == dict(prefill=16, decode=8, unknown=0),
          fig["phases"])
    ent = [d["entropy"] for d in fig["confidence"]["layers"]]
    check("v2: mean router entropy per layer as written", np.allclose(ent, [0.5, 0.75, 1.0]), ent)
    check("v2: requests by label", fig["labels"] == {"chat": 1, "code": 1}, fig["labels"])
    check("v2: load by label, 12 tokens each", [(d["label"], d["tokens"]) for d in fig["label_loads"]]
          == [("chat", 12), ("code", 12)], fig["label_loads"])
    st = fig["steps"]
    check("v2: step costs split by prefill rows: 3 + 3 steps, straggler 0.009 s and 0.012 s, excess rows 50% and 0",
          st["prefill"]["steps"] == 3 and st["decode"]["steps"] == 3
          and abs(st["prefill"]["straggler_seconds"] - 0.009) < 1e-12
          and abs(st["decode"]["straggler_seconds"] - 0.012) < 1e-12
          and abs(st["prefill"]["mean_excess_rows"] - 0.5) < 1e-12 and st["decode"]["mean_excess_rows"] == 0, st)
    phases = fig["time"]["phases"]
    check("v2: load over time by phase adds up", sum(map(sum, phases["prefill"]["experts"])) == 16 * L * K
          and sum(map(sum, phases["decode"]["experts"])) == 8 * L * K, list(phases))
    text = routing_study.report(fig, "v2")
    check("v2: the report has the entropy row, the time-lost and the label tables",
          "| entropy, all tokens | 0.500 | 0.750 | 1.000 |" in text and "## Time lost to imbalance" in text
          and "| chat | 12 |" in text, text[-1500:])


def live_from(fig):
    base = fig["base"]
    layers = []
    for l in range(L):
        loc = base["locality"]["layers"][l]
        layers.append(dict(layer=l, expert_tokens=[str(x) for x in base["expert_counts"][l]],
                           worker_tokens=[str(x) for x in base["worker_counts"][l]],
                           locality=dict(pairs=str(loc["pairs"]), first_choice_repeats=str(loc["first_choice_repeats"]),
                                         set_overlaps=str(loc["set_overlaps"]))))
    return dict(tokens=str(base["summary"]["records"]), layers=layers)


def test_cli_and_live(path, fig):
    live = live_from(fig)
    live_path = os.path.join(WORK, "live.json")
    with open(live_path, "w") as f:
        json.dump(live, f)
    out = os.path.join(WORK, "study")
    r = subprocess.run([sys.executable, STUDY, path, "--tokenizer", TOKENIZER, "--live", live_path, "--out", out,
                        "--json", os.path.join(out, "study.json")], capture_output=True, text=True)
    check("routing_study.py with agreeing telemetry: exit 0, says they agree",
          r.returncode == 0 and "agree exactly" in r.stdout, r.stderr[-400:])
    pngs = ["heatmap", "locality", "worker_load", "token_classes", "inter_layer", "confidence", "load_time"]
    missing = [p for p in pngs if not os.path.isfile(os.path.join(out, p + ".png"))]
    check("every plot and study.md written", not missing and os.path.isfile(os.path.join(out, "study.md")), missing)
    live["layers"][1]["expert_tokens"][2] = str(int(live["layers"][1]["expert_tokens"][2]) + 1)
    with open(live_path, "w") as f:
        json.dump(live, f)
    r = subprocess.run([sys.executable, STUDY, path, "--tokenizer", TOKENIZER, "--live", live_path, "--out", out],
                       capture_output=True, text=True)
    check("one expert count off: exit 2, the layer named as differing",
          r.returncode == 2 and "| 1 | differ by 1 |" in r.stdout, (r.returncode, r.stdout[-600:]))
    r = subprocess.run([sys.executable, STUDY, os.path.join(WORK, "missing.trace"), "--tokenizer", TOKENIZER],
                       capture_output=True, text=True)
    check("a missing trace: exit 1 with one line", r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr)


def main():
    shutil.rmtree(WORK, ignore_errors=True)
    test_pieces_and_classes()
    path, fig = test_study()
    test_version2()
    test_cli_and_live(path, fig)
    print(f"{results['passed']} passed, {results['failed']} failed")
    return 1 if results["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
