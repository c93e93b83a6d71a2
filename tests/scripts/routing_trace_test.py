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
import shutil
import subprocess
import sys

import numpy as np

SRC, WORK = sys.argv[1], sys.argv[2]
sys.path.insert(0, os.path.join(SRC, "scripts"))
import routing_trace as rt  # noqa: E402
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import trace_fixtures as fx  # noqa: E402
from trace_fixtures import (check, header_bytes_for, rec, record_bytes_for, random_trace, run_analyze,  # noqa: E402
                            trace_bytes, write)

ANALYZE = os.path.join(SRC, "scripts", "analyze_routing.py")
PLAN = os.path.join(SRC, "scripts", "plan_placement.py")
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


def main():
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    fx.init(SRC, WORK)
    test_layout()
    test_events()
    placement, records = test_random()
    test_imbalance()
    test_tiny_locality()
    test_bad_files(placement, records)
    test_analyze(placement, records)
    return fx.finish()


if __name__ == "__main__":
    sys.exit(main())
