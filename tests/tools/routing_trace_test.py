#!/usr/bin/env python3
"""Self-check of scripts/routing_trace.py and scripts/analyze_routing.py on synthetic traces.

usage: routing_trace_test.py SOURCE_DIR WORK_DIR     (Debian python3 with numpy and matplotlib)

The traces (versions 1 and 2) and events files are written here byte by byte with struct and json,
from the layout in docs/routing-trace-format.md, independently of the loader's dtype; the counts, worker loads and
locality are checked against slow loop implementations and hand-computed examples. Prints
"N passed, M failed" and exits non-zero on any failure.
"""
import json
import math
import os
import random
import shutil
import struct
import subprocess
import sys

import numpy as np

SRC, WORK = sys.argv[1], sys.argv[2]
sys.path.insert(0, os.path.join(SRC, "scripts"))
import routing_trace as rt  # noqa: E402

ANALYZE = os.path.join(SRC, "scripts", "analyze_routing.py")
PLAN = os.path.join(SRC, "scripts", "plan_placement.py")
results = {"passed": 0, "failed": 0}


def check(name, ok, detail=""):
    results["passed" if ok else "failed"] += 1
    print(("ok: " if ok else "FAIL: ") + name + ("" if ok else f"  ({detail})"))


# ----------------------------------------------------------------------------------------------
# An independent writer, straight from the spec's tables.


def pad(n, multiple):
    return -n % multiple


def header_bytes_for(L, E):
    return 64 + 2 * L * E + pad(64 + 2 * L * E, 8)


def record_bytes_for(L, k, version=2):
    a = L * k + pad(L * k, 4)
    body = 32 + a + 4 * L * k + (4 * L if version >= 2 else 0)
    return body + pad(body, 8)


def default_entropy(L):
    return [0.5 + 0.25 * l for l in range(L)]


def pack_record(L, k, rec, version=2):
    """rec: (request_id, time, step, position, token_id, experts [L][k], weights [L][k]
    [, flags, entropy [L]]); version 1 has neither of the last two (a reserved u32 instead)."""
    req, time, step, pos, tok, experts, weights = rec[:7]
    flags, entropy = (rec[7], rec[8]) if len(rec) > 7 else (0, default_entropy(L))
    if version >= 2:
        raw = struct.pack("<QdIiiBBH", req, time, step, pos, tok, flags, 0, 0)
    else:
        raw = struct.pack("<QdIiiI", req, time, step, pos, tok, 0)
    raw += bytes(e for row in experts for e in row) + b"\0" * pad(L * k, 4)
    raw += struct.pack(f"<{L * k}f", *(w for row in weights for w in row))
    if version >= 2:
        raw += struct.pack(f"<{L}f", *entropy)
    return raw + b"\0" * pad(len(raw), 8)


def trace_bytes(L, E, k, W, placement, records, start=1.7e9, layout=2, **override):
    """layout: the version whose layout is written (1 or 2). override: any header field by its spec name (magic,
    version, header_bytes, record_bytes, n_layers, n_experts, top_k, n_workers), to forge bad
    headers."""
    f = dict(magic=b"MOETRACE", version=layout, header_bytes=header_bytes_for(L, E),
             record_bytes=record_bytes_for(L, k, layout), n_layers=L, n_experts=E, top_k=k, n_workers=W)
    f.update(override)
    head = struct.pack("<8s8Id16x", f["magic"], f["version"], f["header_bytes"], f["record_bytes"],
                       f["n_layers"], f["n_experts"], f["top_k"], f["n_workers"], 0, start)
    head += struct.pack(f"<{L * E}h", *(p for row in placement for p in row))
    head += b"\0" * pad(len(head), 8)
    return head + b"".join(pack_record(L, k, r, layout) for r in records)


def write(name, data):
    path = os.path.join(WORK, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def rec(req, pos, experts, step=1, time=0.0, token=0):
    """A record with descending dummy weights."""
    k = len(experts[0])
    weights = [[(k - j) / (k * (k + 1) / 2) for j in range(k)] for _ in experts]
    return (req, time, step, pos, token, experts, weights)


def random_trace(L, E, k, W, n_requests, seed):
    """Continuous-batching-like trace: requests arrive over time, the first step of each is its
    whole prompt, then one token per step; skewed expert popularity; positions in order."""
    rnd = random.Random(seed)
    placement = [[1 + (e * W) // E if W else 0 for e in range(E)] for _ in range(L)]
    popularity = [[rnd.random() ** 3 + 0.02 for _ in range(E)] for _ in range(L)]
    pending = [(rnd.randint(1, 6), rnd.randint(1, 8)) for _ in range(n_requests)]  # prompt, decode
    active, records, step, next_id = [], [], 0, 1
    while pending or active:
        step += 1
        if pending and rnd.random() < 0.5:
            active.append([next_id, 0, *pending.pop(0)])
            next_id += 1
        for seq in list(active):  # batch rows in order
            req, pos, prompt, decode = seq
            n = prompt if pos == 0 else 1
            for p in range(pos, pos + n):
                experts = [rnd.choices(range(E), weights=popularity[l], k=E * 4) for l in range(L)]
                experts = [list(dict.fromkeys(c))[:k] for c in experts]
                experts = [c + [e for e in range(E) if e not in c][:k - len(c)] for c in experts]
                w = [sorted((rnd.random() for _ in range(k)), reverse=True) for _ in range(L)]
                w = [[x / sum(row) for x in row] for row in w]
                records.append((req, 0.01 * step, step, p, rnd.randrange(32000), experts, w))
            seq[1] += n
            if seq[1] >= prompt + decode:
                active.remove(seq)
    return placement, records


# ----------------------------------------------------------------------------------------------
# Slow references.


def slow_expert_counts(L, E, records):
    out = np.zeros((L, E), dtype=np.int64)
    for r in records:
        for l in range(L):
            for e in r[5][l]:
                out[l, e] += 1
    return out


def slow_worker_counts(L, W, placement, records):
    out = np.zeros((L, W), dtype=np.int64)
    for r in records:
        for l in range(L):
            for e in r[5][l]:
                out[l, placement[l][e] - 1] += 1
    return out


def slow_locality(L, records):
    """Unique (request, position) keys only: pair (r, p) with (r, p+1)."""
    by_key = {(r[0], r[3]): r for r in records}
    repeats, overlaps, pairs = [0] * L, [0] * L, 0
    for (req, pos), r in by_key.items():
        nxt = by_key.get((req, pos + 1))
        if nxt is None:
            continue
        pairs += 1
        for l in range(L):
            repeats[l] += r[5][l][0] == nxt[5][l][0]
            overlaps[l] += bool(set(r[5][l]) & set(nxt[5][l]))
    return pairs, repeats, overlaps


def slow_buckets(W, placement, records, window):
    out = {}
    for r in records:
        b = (r[2] - 1) // window
        row = out.setdefault(b, [0] * W)
        for l, choice in enumerate(r[5]):
            for e in choice:
                row[placement[l][e] - 1] += 1
    return [out[b] for b in sorted(out)]


def slow_replay(L, E, replicas, records):
    """The runtime's split rule, literally: per step and layer, non-replicated choices to their
    rank, then each replicated expert in expert order, its choices in token order then k, one at
    a time to the least-loaded replica rank (ties to the first listed)."""
    W = max(r for row in replicas for ranks in row for r in ranks)
    out = np.zeros((L, W), dtype=np.int64)
    steps = []  # runs of equal step numbers, file order
    for r in records:
        if not steps or steps[-1][0][2] != r[2]:
            steps.append([])
        steps[-1].append(r)
    for step in steps:
        for l in range(L):
            load = [0] * (W + 1)
            for r in step:
                for e in r[5][l]:
                    if len(replicas[l][e]) == 1:
                        load[replicas[l][e][0]] += 1
            for e in range(E):
                if len(replicas[l][e]) == 1:
                    continue
                for r in step:
                    for choice in r[5][l]:
                        if choice == e:
                            best = min(replicas[l][e], key=lambda rank: load[rank])  # first on ties
                            load[best] += 1
            out[l] += load[1:]
    return out


def close(a, b, tol=1e-9):
    return all(abs(x - y) <= tol for x, y in zip(a, b)) and len(a) == len(b)


def imb_tuple(d):
    return [d["mean"], d["max"], d["balancedness"], d["imbalance_ratio"], d["cv"]]


# ----------------------------------------------------------------------------------------------
# Tests.


def test_layout():
    check("record size of 32 layers top-2 is 480 bytes, 352 in version 1 (spec)",
          rt.record_size(32, 2) == 480 == record_bytes_for(32, 2)
          and rt.record_size(32, 2, version=1) == 352 == record_bytes_for(32, 2, version=1))
    for L, E, k in [(3, 5, 3), (5, 7, 1), (1, 2, 2), (32, 8, 2)]:
        same = (rt.header_size(L, E) == header_bytes_for(L, E)
                and all(rt.record_size(L, k, v) == record_bytes_for(L, k, v)
                        and rt.record_dtype(L, k, v).itemsize == record_bytes_for(L, k, v) for v in (1, 2)))
        check(f"sizes of L={L} E={E} k={k} agree with the spec", same)
        # Odd paddings: every field must come back exactly, in both versions.
        placement = [[1 + (l + e) % 2 for e in range(E)] for l in range(L)]
        records = [(7 + i, 0.5 * i, 3 + i, 10 + i, 1000 + i,
                    [[(l + j + i) % E for j in range(k)] for l in range(L)],
                    [[0.25 * (j + 1) + l for j in range(k)] for l in range(L)],
                    i % 2, [0.125 * (l + 1) + i for l in range(L)]) for i in range(3)]
        for version in (1, 2):
            data = trace_bytes(L, E, k, 2, placement, records, start=123.5, layout=version)
            t = rt.load(write(f"layout_{L}_{E}_{k}_v{version}.trace", data))
            r = t.records
            ok = (t.version == version and (t.n_layers, t.n_experts, t.top_k, t.n_workers) == (L, E, k, 2)
                  and t.start_time == 123.5 and t.placement.dtype == np.int16
                  and t.placement.tolist() == placement and len(r) == 3 and t.dropped_bytes == 0
                  and r["request_id"].tolist() == [7, 8, 9] and r["time"].tolist() == [0.0, 0.5, 1.0]
                  and r["step"].tolist() == [3, 4, 5] and r["position"].tolist() == [10, 11, 12]
                  and r["token_id"].tolist() == [1000, 1001, 1002]
                  and r["experts"].shape == (3, L, k) and r["weights"].shape == (3, L, k)
                  and r["entropy"].shape == (3, L) and r["flags"].dtype == np.uint8
                  and r.dtype == rt.record_dtype(L, k, 2)
                  and all(r["experts"][i].tolist() == records[i][5] for i in range(3))
                  and all(np.allclose(r["weights"][i], records[i][6]) for i in range(3)))
            if version == 2:
                ok = ok and (r["flags"].tolist() == [0, 1, 0]
                             and all(np.allclose(r["entropy"][i], records[i][8]) for i in range(3)))
            else:
                ok = ok and not r["flags"].any() and np.isnan(r["entropy"]).all()
            check(f"every field reads back (L={L} E={E} k={k}, version {version})", ok)


def test_events():
    """load_events: sequences with labels and ends, steps, a missing file, a cut last line, a
    malformed line before the end."""
    trace = os.path.join(WORK, "events.trace")
    write("events.trace", trace_bytes(1, 2, 1, 0, [[0, 0]], [rec(1, 0, [[0]])]))
    ev = rt.load_events(trace)
    check("no events file: empty, flagged missing",
          ev["missing"] and ev["sequences"] == {} and ev["steps"] == [] and ev["path"] == trace + ".events.jsonl")
    lines = [
        {"event": "sequence", "request_id": 1, "label": "chat", "prompt_tokens": 3, "max_tokens": 8, "time": 0.5},
        {"event": "sequence", "request_id": 2, "label": "", "prompt_tokens": 1, "max_tokens": 2, "time": 0.75},
        {"event": "step", "step": 1, "time": 1.0, "rows": 4, "prefill_rows": 4, "exchange_seconds": 0.25,
         "worker_compute_seconds": [0.125, 0.0625], "worker_rows": [3, 1], "straggler_seconds": 0.03125},
        {"event": "sequence_end", "request_id": 2, "time": 1.5},
        {"event": "future_kind", "x": 1},
        {"event": "sequence", "request_id": 1, "label": "again", "prompt_tokens": 3, "max_tokens": 8, "time": 2.0},
    ]
    text = "".join(json.dumps(x) + "\n" for x in lines)
    with open(trace + ".events.jsonl", "w") as f:
        f.write(text + '{"event":"step","ste')
    ev = rt.load_events(trace)
    ok = (not ev["missing"] and ev["dropped_partial_line"]
          and ev["sequences"] == {1: dict(label="again", prompt_tokens=3, max_tokens=8, time=2.0, end_time=None),
                                  2: dict(label="", prompt_tokens=1, max_tokens=2, time=0.75, end_time=1.5)}
          and ev["steps"] == [{k: v for k, v in lines[2].items() if k != "event"}])
    check("events: sequences (latest start wins), ends, steps; a cut last line is dropped", ok, ev)
    with open(trace + ".events.jsonl", "w") as f:
        f.write(text)
    ev = rt.load_events(trace)
    check("events: a whole file drops nothing", not ev["dropped_partial_line"] and len(ev["steps"]) == 1)
    with open(trace + ".events.jsonl", "w") as f:
        f.write('{"event": "sequence", "request_id"\n' + text)
    try:
        rt.load_events(trace)
        check("events: a malformed line before the end is an error", False, "no error")
    except ValueError as e:
        check("events: a malformed line before the end is an error", "line 1" in str(e) and "\n" not in str(e), e)
    t = rt.load(trace)
    check("record_labels", rt.record_labels(t, rt.load_events(os.path.join(WORK, "none.trace"))).tolist() == [""])


def test_random(L=4, E=8, k=2, W=3):
    placement, records = random_trace(L, E, k, W, n_requests=25, seed=5)
    t = rt.load(write("random.trace", trace_bytes(L, E, k, W, placement, records)))
    check("random trace: record count", len(t.records) == len(records), f"{len(t.records)} vs {len(records)}")
    ec = rt.expert_counts(t)
    check("expert_counts matches the slow loop", ec.dtype == np.int64 and ec.shape == (L, E)
          and (ec == slow_expert_counts(L, E, records)).all())
    check("every record adds k choices per layer", (ec.sum(axis=1) == len(records) * k).all())
    wc = rt.worker_counts(t)
    check("worker_counts matches the slow loop", wc.dtype == np.int64 and wc.shape == (L, W)
          and (wc == slow_worker_counts(L, W, placement, records)).all())
    loc = rt.locality(t)
    pairs, repeats, overlaps = slow_locality(L, records)
    ok = (loc["pairs"] == pairs > 0
          and [d["first_choice_repeats"] for d in loc["layers"]] == repeats
          and [d["set_overlaps"] for d in loc["layers"]] == overlaps
          and loc["total"]["pairs"] == pairs * L
          and loc["total"]["first_choice_repeats"] == sum(repeats)
          and loc["total"]["set_overlaps"] == sum(overlaps))
    check("locality matches the slow loop", ok, f"{loc['pairs']} vs {pairs}")
    for window in (1, 3, 1000):
        b = rt.bucketed_worker_load(t, window)
        starts = sorted({(r[2] - 1) // window * window + 1 for r in records})
        ends = [max(r[1] for r in records if (r[2] - 1) // window * window + 1 == s) for s in starts]
        ok = (b.workers.tolist() == slow_buckets(W, placement, records, window)
              and (b.choices == b.workers.sum(axis=1)).all()
              and b.first_step.tolist() == starts and close(b.end_time.tolist(), ends))
        check(f"bucketed_worker_load, window {window}", ok)
    return placement, records


def test_imbalance():
    d = rt.imbalance([10, 0, 0, 0])
    check("imbalance of [10,0,0,0]", close(imb_tuple(d), [2.5, 10, 0.25, 3, math.sqrt(3)]), d)
    check("imbalance of a uniform vector", close(imb_tuple(rt.imbalance([3, 3, 3])), [3, 3, 1, 0, 0]))
    check("imbalance of all zeros is balanced", close(imb_tuple(rt.imbalance([0, 0])), [0, 0, 1, 0, 0]))
    o = rt.overall_imbalance([[4, 0], [1, 1]])  # means 2,1; maxima 4,1; column sums 5,1
    check("overall imbalance by hand", close(imb_tuple(o), [3, 5, 0.6, 2 / 3, 2 / 3]), o)
    zeros = rt.overall_imbalance([[0, 0], [0, 0]])
    check("overall imbalance of zeros", close(imb_tuple(zeros), [0, 0, 1, 0, 0]))

    # Skewed trace: layer 0 always {0,1}; layer 1 alternates {0,1}, {2,3}. Workers: layer 0
    # hosts 0,1 on rank 1; layer 1 alternates ranks.
    records = [rec(1, i, [[0, 1], [0, 1] if i % 2 else [2, 3]], step=i + 1) for i in range(10)]
    placement = [[1, 1, 2, 2], [1, 2, 1, 2]]
    t = rt.load(write("skewed.trace", trace_bytes(2, 4, 2, 2, placement, records)))
    ec, wc = rt.expert_counts(t), rt.worker_counts(t)
    check("skewed: expert counts", ec.tolist() == [[10, 10, 0, 0], [5, 5, 5, 5]], ec.tolist())
    check("skewed: worker counts", wc.tolist() == [[20, 0], [10, 10]], wc.tolist())
    layers = rt.layer_imbalance(ec)
    check("skewed: per-layer expert imbalance", close(imb_tuple(layers[0]), [5, 10, 0.5, 1, 1])
          and close(imb_tuple(layers[1]), [5, 5, 1, 0, 0]))
    check("skewed: overall expert imbalance",
          close(imb_tuple(rt.overall_imbalance(ec)), [10, 15, 2 / 3, 0.5, 0.5]))
    check("skewed: overall worker imbalance",
          close(imb_tuple(rt.overall_imbalance(wc)), [20, 30, 2 / 3, 0.5, 0.5]))


def tiny_records():
    """Request 5 at positions 0,1,2 (L=2, E=4, k=2), written out of order and interleaved with
    request 6 at positions 0 and 2 (a gap: no pair) and request 7 alone."""
    t0 = rec(5, 0, [[0, 1], [2, 3]])
    t1 = rec(5, 1, [[0, 2], [3, 2]])
    t2 = rec(5, 2, [[3, 1], [3, 0]])
    return [t1, rec(6, 0, [[0, 1], [0, 1]]), t0, rec(7, 4, [[1, 2], [1, 2]]), t2, rec(6, 2, [[0, 1], [0, 1]])]


def test_tiny_locality():
    # Layer 0: {0,1}->{0,2} first repeats, overlap; {0,2}->{3,1} neither: 1 repeat, 1 overlap.
    # Layer 1: {2,3}->{3,2} overlap only; {3,2}->{3,0} both: 1 repeat, 2 overlaps.
    t = rt.load(write("tiny.trace", trace_bytes(2, 4, 2, 0, [[0] * 4] * 2, tiny_records())))
    loc = rt.locality(t)
    l0, l1, tot = loc["layers"][0], loc["layers"][1], loc["total"]
    check("tiny: 2 pairs", loc["pairs"] == 2 and l0["pairs"] == l1["pairs"] == 2, loc["pairs"])
    check("tiny: layer 0", (l0["first_choice_repeats"], l0["set_overlaps"]) == (1, 1), l0)
    check("tiny: layer 1", (l1["first_choice_repeats"], l1["set_overlaps"]) == (1, 2), l1)
    check("tiny: all layers", (tot["pairs"], tot["first_choice_repeats"], tot["set_overlaps"]) == (4, 2, 3)
          and close([tot["first_choice_ratio"], tot["set_overlap_ratio"]], [0.5, 0.75]), tot)
    check("tiny: chance baselines 1/4 and 1 - C(2,2)/C(4,2) = 5/6",
          close([loc["chance_first_choice"], loc["chance_set_overlap"]], [0.25, 5 / 6]))
    check("chance overlap is 1 when E-k < k", rt.chance_set_overlap(3, 2) == 1.0)
    check("chance overlap, E=8 k=2: 1 - 15/28", close([rt.chance_set_overlap(8, 2)], [13 / 28]))
    check("tiny: no workers gives [L, 0]", rt.worker_counts(t).shape == (2, 0))

    # The same sequence run twice under one request id (a tool's warm-up): each run pairs with
    # itself. Run 2 has different choices so a cross-run pairing would change the counts.
    run1 = [rec(1, p, [[p % 4, 3]]) for p in range(3)]  # first choices 0,1,2: no repeats
    run2 = [rec(1, p, [[2, 3]]) for p in range(3)]  # first choice 2 throughout: 2 repeats
    t = rt.load(write("rerun.trace", trace_bytes(1, 4, 2, 0, [[0] * 4], run1 + run2)))
    loc = rt.locality(t)
    check("repeated sequence pairs by occurrence", loc["pairs"] == 4
          and loc["layers"][0]["first_choice_repeats"] == 2, loc["layers"][0])

    t = rt.load(write("single.trace", trace_bytes(1, 4, 2, 0, [[0] * 4], [rec(1, 0, [[0, 1]])])))
    loc = rt.locality(t)
    check("no pairs: ratios are None", loc["pairs"] == 0 and loc["total"]["first_choice_ratio"] is None)


def expect_error(name, path, needle):
    """The Python loader and the C++ reader (moe-plan-placement --trace) both refuse the file, in
    one line that says what is wrong."""
    p = subprocess.run([os.path.join(os.environ["MOE_BIN"], "moe-plan-placement"), "--trace", path, "--workers",
                        "2"], capture_output=True, text=True, timeout=60)
    check(f"{name} (moe-plan-placement --trace)", p.returncode == 1 and needle in p.stderr
          and len(p.stderr.strip().splitlines()) == 1, p.stderr.strip())
    try:
        rt.load(path)
    except ValueError as e:
        msg = str(e)
        check(name, needle in msg and "\n" not in msg and path in msg, msg)
        return
    except Exception as e:  # noqa: BLE001 - any other exception is the failure being tested for
        check(name, False, f"{type(e).__name__}: {e}")
        return
    check(name, False, "loaded without error")


def test_bad_files(placement, records, L=4, E=8, k=2, W=3):
    good = trace_bytes(L, E, k, W, placement, records)
    hb, rb = header_bytes_for(L, E), record_bytes_for(L, k)
    t = rt.load(write("truncated.trace", good[:hb + 5 * rb + rb // 2]))
    check("truncated: drops the partial record", len(t.records) == 5 and t.dropped_bytes == rb // 2
          and t.records["experts"][4].tolist() == records[4][5])
    t = rt.load(write("header_only.trace", good[:hb]))
    check("header only: zero records", len(t.records) == 0 and rt.expert_counts(t).sum() == 0
          and rt.locality(t)["pairs"] == 0)
    expect_error("empty file", write("empty.trace", b""), "shorter than")
    expect_error("cut inside the fixed header", write("cut40.trace", good[:40]), "shorter than")
    expect_error("cut inside the placement", write("cut_placement.trace", good[:hb - 8]), "truncated header")
    expect_error("bad magic", write("magic.trace", b"NOTTRACE" + good[8:]), "magic")
    expect_error("text file", write("text.trace", b"hello, this is not a trace at all " * 4), "magic")
    forged = {
        "version 3": (dict(version=3), "version 3"),
        "version 0": (dict(version=0), "version 0"),
        "version 1 over version-2 records": (dict(version=1), "record_bytes"),
        "wrong record_bytes": (dict(record_bytes=rb + 8), "record_bytes"),
        "wrong header_bytes": (dict(header_bytes=hb + 8), "header_bytes"),
        "zero experts": (dict(n_experts=0), "n_experts"),
        "zero layers": (dict(n_layers=0), "n_layers"),
        "top_k above experts": (dict(top_k=E + 1), "top_k"),
        "absurd worker count": (dict(n_workers=1 << 31), "n_workers"),
    }
    for name, (override, needle) in forged.items():
        expect_error(f"forged header: {name}", write("forged.trace", trace_bytes(
            L, E, k, W, placement, records[:3], **override)), needle)
    bad_place = [row[:] for row in placement]
    bad_place[1][2] = W + 1
    expect_error("placement rank above n_workers",
                 write("place.trace", trace_bytes(L, E, k, W, bad_place, records[:3])), "placement")
    expect_error("placement without workers",
                 write("place0.trace", trace_bytes(L, E, k, 0, placement, records[:3])), "placement")
    bad = list(records[:3])
    bad[2] = rec(1, 0, [[0, E]] * L)
    expect_error("expert id out of range", write("expert.trace", trace_bytes(L, E, k, W, placement, bad)),
                 "record 2")
    bad[2] = rec(1, 0, [[0, 1]] * L, time=float("nan"))
    expect_error("time not finite", write("nan.trace", trace_bytes(L, E, k, W, placement, bad)), "time")
    try:
        rt.load(os.path.join(WORK, "does-not-exist.trace"))
        check("missing file raises OSError", False, "no error")
    except OSError:
        check("missing file raises OSError", True)


def run_analyze(*args):
    p = subprocess.run([sys.executable, ANALYZE, *args], capture_output=True, text=True, timeout=300)
    return p.returncode, p.stdout, p.stderr


def is_png(path):
    try:
        with open(path, "rb") as f:
            return f.read(8) == b"\x89PNG\r\n\x1a\n" and os.path.getsize(path) > 1000
    except OSError:
        return False


PNGS = ("heatmap.png", "worker_load.png", "locality.png")


def test_analyze(placement, records, L=4, E=8, k=2, W=3):
    out = os.path.join(WORK, "analysis")
    js = os.path.join(WORK, "analysis.json")
    rc, stdout, stderr = run_analyze(os.path.join(WORK, "random.trace"), "--out", out, "--json", js,
                                     "--window-steps", "3", "--title", "synthetic")
    check("analyze_routing.py runs", rc == 0, stderr.strip()[-500:])
    check("writes the 3 PNGs", all(is_png(os.path.join(out, p)) for p in PNGS),
          os.listdir(out) if os.path.isdir(out) else "no output directory")
    check("summary has the tables",
          all(s in stdout for s in ("records", "balancedness", "temporal locality", "chance")))
    try:
        with open(js) as f:
            fig = json.load(f)
    except (OSError, ValueError) as e:
        check("writes valid JSON", False, e)
        return
    keys = {"header", "summary", "expert_counts", "worker_counts", "expert_imbalance", "worker_imbalance",
            "locality", "worker_load_over_time"}
    check("JSON has every figure", keys <= fig.keys(), sorted(fig))
    check("JSON counts match the slow loops",
          fig["expert_counts"] == slow_expert_counts(L, E, records).tolist()
          and fig["worker_counts"] == slow_worker_counts(L, W, placement, records).tolist())
    pairs, repeats, overlaps = slow_locality(L, records)
    check("JSON locality matches", fig["locality"]["pairs"] == pairs
          and fig["locality"]["total"]["set_overlaps"] == sum(overlaps))
    check("JSON imbalance per layer and overall", len(fig["expert_imbalance"]["layers"]) == L
          and "balancedness" in fig["worker_imbalance"]["overall"])
    check("JSON worker load uses --window-steps",
          fig["worker_load_over_time"]["window_steps"] == 3
          and fig["worker_load_over_time"]["workers"] == slow_buckets(W, placement, records, 3))
    check("JSON summary", fig["summary"]["records"] == len(records)
          and fig["summary"]["requests"] == len({r[0] for r in records}))

    # Default --out: next to the trace; single process (no workers); a tall 32-layer model.
    side = os.path.join(WORK, "side")
    os.makedirs(side, exist_ok=True)
    placement32, records32 = random_trace(32, 8, 2, 0, n_requests=4, seed=9)
    trace = os.path.join(side, "big.trace")
    shutil.copy(write("big.trace", trace_bytes(32, 8, 2, 0, placement32, records32)), trace)
    rc, stdout, stderr = run_analyze(trace, "--json", os.path.join(side, "big.json"))
    check("32 layers, single process: runs", rc == 0, stderr.strip()[-500:])
    check("default --out is the trace's directory", all(is_png(os.path.join(side, p)) for p in PNGS))
    with open(os.path.join(side, "big.json")) as f:
        fig = json.load(f)
    check("no workers: worker counts [L, 0], no worker imbalance",
          fig["worker_counts"] == [[]] * 32 and fig["worker_imbalance"] is None)

    for name in ("truncated.trace", "header_only.trace", "tiny.trace", "layout_3_5_3_v1.trace"):
        rc, _, stderr = run_analyze(os.path.join(WORK, name), "--out", os.path.join(WORK, "out_" + name))
        check(f"analyze {name}", rc == 0 and "Traceback" not in stderr, stderr.strip()[-500:])

    for name in ("magic.trace", "cut_placement.trace", "expert.trace", "does-not-exist.trace"):
        rc, stdout, stderr = run_analyze(os.path.join(WORK, name), "--out", os.path.join(WORK, "bad_out"))
        check(f"bad file {name}: exit 1, one line", rc == 1 and len(stderr.strip().splitlines()) == 1
              and "Traceback" not in stderr, f"rc {rc}: {stderr.strip()[-300:]}")


def write_json(name, obj):
    path = os.path.join(WORK, name)
    with open(path, "w") as f:
        json.dump(obj, f)
    return path


def test_replay(placement, records, L=4, E=8, k=2, W=3):
    t = rt.load(os.path.join(WORK, "random.trace"))
    own = rt.replay_worker_counts(t, rt.placement_from_table(t.placement))
    check("replay under the trace's own placement equals its worker loads",
          own.tolist() == rt.worker_counts(t).tolist(), own.tolist())
    from_file = rt.load_placement(write_json("own.json", {"layers": placement}), L, E)
    check("replay of the same placement read from a file",
          rt.replay_worker_counts(t, from_file).tolist() == rt.worker_counts(t).tolist())

    # By hand, 1 layer, 3 experts, top-1, 2 workers: expert 1 on rank 1, expert 2 on rank 2,
    # expert 0 replicated. Step 1: expert 1 three times, expert 2 once (ranks at 3 | 1), then
    # expert 0 three times: rank 2 (3|2), rank 2 (3|3), and the tie to the first-listed replica.
    # Step 2 starts from zero: expert 2 -> 0|1, then expert 0 -> rank 1 (1|1).
    split = ([rec(1, p, [[1]], step=1) for p in range(3)] + [rec(2, 0, [[2]], step=1)]
             + [rec(3, p, [[0]], step=1) for p in range(3)]
             + [rec(2, 1, [[2]], step=2), rec(3, 3, [[0]], step=2)])
    tiny = rt.load(write("split.trace", trace_bytes(1, 3, 1, 2, [[1, 1, 2]], split)))
    for order, want in (([1, 2], [4 + 1, 3 + 1]), ([2, 1], [3 + 1, 4 + 1])):
        p = rt.parse_placement({"experts": [order, 1, 2]}, 1, 3)
        got = rt.replay_worker_counts(tiny, p).tolist()
        check(f"split rule by hand, ties to the first replica ({order})",
              got == [want] and got == slow_replay(1, 3, p.replicas, split).tolist(), got)
    # A step number seen again later (a tool's second run) is a new step: the same records twice.
    again = rt.load(write("split_twice.trace", trace_bytes(1, 3, 1, 2, [[1, 1, 2]], split + split)))
    p = rt.parse_placement({"experts": [[1, 2], 1, 2]}, 1, 3)
    check("steps are runs of equal step numbers", rt.replay_worker_counts(again, p).tolist() == [[10, 8]])

    # Random replicated placements against the literal rule.
    rnd = random.Random(11)
    for trial in range(4):
        replicas = []
        for _ in range(L):
            row = []
            for e in range(E):
                n = rnd.choice([1, 1, 2, 3])
                row.append(rnd.sample(range(1, W + 2), n))  # 4 ranks
            replicas.append(row)
        p = rt.parse_placement({"layers": replicas}, L, E)
        got = rt.replay_worker_counts(t, p)
        want = slow_replay(L, E, p.replicas, records)
        check(f"replay with replicas equals the literal rule (trial {trial})",
              got.tolist() == want.tolist() and (got.sum(axis=1) == len(records) * k).all(),
              f"{got.tolist()} vs {want.tolist()}")

    bad = {
        "rank 0": {"experts": [0] * E},
        "a repeated replica": {"experts": [[1, 1]] + [1] * (E - 1)},
        "an empty replica list": {"experts": [[]] + [1] * (E - 1)},
        "a short row": {"experts": [1] * (E - 1)},
        "too many slots on a rank": {"expert_slots": 2, "experts": [1, 1, 1, 2, 2, 3, 3, 3]},
        "no table": {"placement": [1] * E},
    }
    for name, obj in bad.items():
        try:
            rt.load_placement(write_json("bad_placement.json", obj), L, E)
            check(f"bad placement: {name}", False, "accepted")
        except ValueError as e:
            check(f"bad placement: {name}", "\n" not in str(e), e)

    js = os.path.join(WORK, "replay.json")
    replicated = write_json("replicated.json", {"expert_slots": E, "layers": replicas})
    rc, stdout, stderr = run_analyze(os.path.join(WORK, "random.trace"), "--out",
                                     os.path.join(WORK, "replay"), "--json", js, "--placement", replicated)
    ok = rc == 0 and "under " + replicated in stdout
    if ok:
        with open(js) as f:
            pr = json.load(f)["placement_replay"]
        ok = (pr["worker_counts"] == slow_replay(L, E, replicas, records).tolist()
              and pr["n_workers"] == W + 1 and "balancedness" in pr["worker_imbalance"]["overall"]
              and len(pr["worker_imbalance"]["layers"]) == L)
    check("analyze_routing.py --placement reports and writes the replay", ok, stderr.strip()[-500:])
    rc, _, stderr = run_analyze(os.path.join(WORK, "random.trace"), "--out", os.path.join(WORK, "replay"),
                                "--placement", os.path.join(WORK, "bad_placement.json"))
    check("analyze_routing.py --placement with a bad file: exit 1, one line",
          rc == 1 and len(stderr.strip().splitlines()) == 1, stderr)


def test_plan_placement():
    """End to end: a skewed trace whose hot experts 0 and 1 share worker 1 under the contiguous
    default; the planned placement must replay better balanced."""
    L, E, k, W = 2, 8, 2, 4
    rnd = random.Random(3)
    weights = [20, 10, 1, 1, 1, 1, 1, 1]
    records = []
    for step in range(1, 41):
        for row in range(4):
            experts = []
            for _ in range(L):
                first = rnd.choices(range(E), weights=weights)[0]
                second = rnd.choices([e for e in range(E) if e != first],
                                     weights=[w for e, w in enumerate(weights) if e != first])[0]
                experts.append([first, second])
            records.append(rec(row + 1, step, experts, step=step))
    contiguous = [[1 + e // 2 for e in range(E)]] * L
    trace = write("skewed_plan.trace", trace_bytes(L, E, k, W, contiguous, records))
    out = os.path.join(WORK, "planned.json")
    env = dict(os.environ)
    p = subprocess.run([sys.executable, PLAN, trace, "--workers", str(W), "--out", out],
                       capture_output=True, text=True, timeout=300, env=env)
    check("plan_placement.py runs", p.returncode == 0, (p.stderr or p.stdout).strip()[-800:])
    if p.returncode != 0:
        return
    with open(out) as f:
        obj = json.load(f)
    placement = rt.load_placement(out, L, E)  # validates, expert_slots included
    slots = obj.get("expert_slots")
    ok = slots == E // W + 1 and placement.n_workers == W
    for row in placement.replicas:
        hosted = np.bincount([r for ranks in row for r in ranks], minlength=W + 1)[1:]
        ok = ok and all(1 <= h <= slots for h in hosted) and all(len(set(r)) == len(r) >= 1 for r in row)
    check("planned placement is valid JSON within expert_slots", ok, obj)
    # plan_placement.py lets the C++ reader count the loads (--trace); the Python loader's counts
    # (--loads) must give the same plan.
    loads = os.path.join(WORK, "skewed_loads.json")
    with open(loads, "w") as f:
        json.dump({"loads": rt.expert_counts(rt.load(trace)).tolist()}, f)
    py = subprocess.run([os.path.join(os.environ["MOE_BIN"], "moe-plan-placement"), "--loads", loads, "--workers",
                         str(W), "--out", out + ".py"], capture_output=True, text=True, timeout=300)
    with open(out + ".py") as f:
        check("moe-plan-placement --loads (counted by routing_trace.py) plans what --trace (counted in C++) plans",
              py.returncode == 0 and json.load(f) == obj, (py.stderr or py.stdout).strip()[-300:])
    t = rt.load(trace)
    before = rt.overall_imbalance(rt.replay_worker_counts(t, rt.contiguous_placement(L, E, W)))
    after = rt.overall_imbalance(rt.replay_worker_counts(t, placement))
    check("planned placement replays better balanced than contiguous",
          after["balancedness"] > before["balancedness"] + 0.1
          and f"{after['balancedness']:.3f} after" in p.stdout,
          f"{before['balancedness']:.3f} -> {after['balancedness']:.3f}")
    print(f"   plan_placement.py on a skewed trace: worker balancedness {before['balancedness']:.3f} "
          f"(contiguous) -> {after['balancedness']:.3f} (planned, replayed)")
    # Re-planning from the plan moves nothing.
    p = subprocess.run([sys.executable, PLAN, trace, "--workers", str(W), "--out", out + ".again",
                        "--current", out], capture_output=True, text=True, timeout=300)
    check("re-planning from the plan moves nothing", p.returncode == 0 and " 0 experts moved" in p.stdout,
          (p.stderr or p.stdout).strip()[-800:])
    p = subprocess.run([sys.executable, PLAN, trace, "--workers", "9"], capture_output=True, text=True,
                       timeout=300)
    check("plan_placement.py with more workers than experts: exit 1, one line",
          p.returncode == 1 and len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr,
          p.stderr)


def main():
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    test_layout()
    test_events()
    placement, records = test_random()
    test_imbalance()
    test_tiny_locality()
    test_bad_files(placement, records)
    test_analyze(placement, records)
    test_replay(placement, records)
    test_plan_placement()
    print(f"{results['passed']} passed, {results['failed']} failed")
    return 1 if results["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
