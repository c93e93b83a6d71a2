#!/usr/bin/env python3
"""Self-check of scripts/expert_placement.py (placements, and a trace's worker load replayed under
one by the runtime's split rule) and scripts/plan_placement.py on synthetic traces: the replay
against a literal one-at-a-time implementation of the split rule and hand-worked ties, bad
placement files, analyze_routing.py --placement, and the planner end to end (moe-plan-placement
from MOE_BIN).

usage: expert_placement_test.py SOURCE_DIR WORK_DIR     (Debian python3 with numpy)
Prints "N passed, M failed" and exits non-zero on any failure.
"""
import json
import os
import random
import shutil
import subprocess
import sys

import numpy as np

SRC, WORK = sys.argv[1], sys.argv[2]
sys.path.insert(0, os.path.join(SRC, "scripts"))
import routing_trace as rt  # noqa: E402
import expert_placement as ep  # noqa: E402
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import trace_fixtures as fx  # noqa: E402
from trace_fixtures import check, rec, random_trace, run_analyze, trace_bytes, write  # noqa: E402

PLAN = os.path.join(SRC, "scripts", "plan_placement.py")


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


def write_json(name, obj):
    path = os.path.join(WORK, name)
    with open(path, "w") as f:
        json.dump(obj, f)
    return path


def test_replay(placement, records, L=4, E=8, k=2, W=3):
    t = rt.load(os.path.join(WORK, "random.trace"))
    own = ep.replay_worker_counts(t, ep.placement_from_table(t.placement))
    check("replay under the trace's own placement equals its worker loads",
          own.tolist() == rt.worker_counts(t).tolist(), own.tolist())
    from_file = ep.load_placement(write_json("own.json", {"layers": placement}), L, E)
    check("replay of the same placement read from a file",
          ep.replay_worker_counts(t, from_file).tolist() == rt.worker_counts(t).tolist())

    # By hand, 1 layer, 3 experts, top-1, 2 workers: expert 1 on rank 1, expert 2 on rank 2,
    # expert 0 replicated. Step 1: expert 1 three times, expert 2 once (ranks at 3 | 1), then
    # expert 0 three times: rank 2 (3|2), rank 2 (3|3), and the tie to the first-listed replica.
    # Step 2 starts from zero: expert 2 -> 0|1, then expert 0 -> rank 1 (1|1).
    split = ([rec(1, p, [[1]], step=1) for p in range(3)] + [rec(2, 0, [[2]], step=1)]
             + [rec(3, p, [[0]], step=1) for p in range(3)]
             + [rec(2, 1, [[2]], step=2), rec(3, 3, [[0]], step=2)])
    tiny = rt.load(write("split.trace", trace_bytes(1, 3, 1, 2, [[1, 1, 2]], split)))
    for order, want in (([1, 2], [4 + 1, 3 + 1]), ([2, 1], [3 + 1, 4 + 1])):
        p = ep.parse_placement({"experts": [order, 1, 2]}, 1, 3)
        got = ep.replay_worker_counts(tiny, p).tolist()
        check(f"split rule by hand, ties to the first replica ({order})",
              got == [want] and got == slow_replay(1, 3, p.replicas, split).tolist(), got)
    # A step number seen again later (a tool's second run) is a new step: the same records twice.
    again = rt.load(write("split_twice.trace", trace_bytes(1, 3, 1, 2, [[1, 1, 2]], split + split)))
    p = ep.parse_placement({"experts": [[1, 2], 1, 2]}, 1, 3)
    check("steps are runs of equal step numbers", ep.replay_worker_counts(again, p).tolist() == [[10, 8]])

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
        p = ep.parse_placement({"layers": replicas}, L, E)
        got = ep.replay_worker_counts(t, p)
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
            ep.load_placement(write_json("bad_placement.json", obj), L, E)
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
    placement = ep.load_placement(out, L, E)  # validates, expert_slots included
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
    before = rt.overall_imbalance(ep.replay_worker_counts(t, ep.contiguous_placement(L, E, W)))
    after = rt.overall_imbalance(ep.replay_worker_counts(t, placement))
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
    fx.init(SRC, WORK)
    L, E, k, W = 4, 8, 2, 3
    placement, records = random_trace(L, E, k, W, n_requests=25, seed=5)
    write("random.trace", trace_bytes(L, E, k, W, placement, records))
    test_replay(placement, records)
    test_plan_placement()
    return fx.finish()


if __name__ == "__main__":
    sys.exit(main())
