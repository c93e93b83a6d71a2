#!/usr/bin/env python3
"""scripts/routing_trace.py on a trace the C++ writer wrote (routing_trace_test.cc): load() and
load_events() must give what the C++ side read and expects.

usage: check_trace.py SOURCE_DIR TRACE EXPECTED.json      (exit 0: equal; else prints the first
difference and exits 1)
"""
import json
import math
import sys

SRC, TRACE, EXPECTED = sys.argv[1:4]
sys.path.insert(0, SRC + "/scripts")
import numpy as np  # noqa: E402
import routing_trace as rt  # noqa: E402


def same(a, b):
    """Exact equality, NaN equal to NaN, floats compared after the float32 round trip the trace
    stores them in."""
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None:
            return a is b
        return (math.isnan(a) and math.isnan(b)) or a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


def main():
    want = json.load(open(EXPECTED))
    t = rt.load(TRACE)
    r = t.records
    got = dict(request_id=r["request_id"].tolist(), position=r["position"].tolist(),
               flags=r["flags"].tolist(), time=r["time"].tolist(),
               entropy=[[float(np.float32(x)) for x in row] for row in r["entropy"].tolist()])
    want_entropy = [[float(np.float32(x)) for x in row] for row in want["entropy"]]
    ev = rt.load_events(TRACE)
    checks = [
        ("version", t.version, 2),
        ("dtype has flags and entropy", ("flags" in r.dtype.names, r.dtype["entropy"].shape), (True, (t.n_layers,))),
        ("request_id", got["request_id"], want["request_id"]),
        ("position", got["position"], want["position"]),
        ("flags", got["flags"], want["flags"]),
        ("time", got["time"], want["time"]),
        ("entropy", got["entropy"], want_entropy),
        ("events missing", (ev["missing"], ev["dropped_partial_line"]), (False, False)),
        ("sequences", ev["sequences"], {int(k): v for k, v in want["sequences"].items()}),
        ("steps", ev["steps"], want["steps"]),
        ("record labels", rt.record_labels(t, ev).tolist(), ["chat:v1", "", "chat:v1", ""]),
        ("step times equal record times", sorted({s["time"] for s in ev["steps"]}), sorted(set(got["time"]))),
    ]
    for name, a, b in checks:
        if not same(a, b):
            print(f"check_trace.py: {name}: got {a!r}, expected {b!r}")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
