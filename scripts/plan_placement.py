#!/usr/bin/env python3
"""An expert placement (with replicas of hot experts) for the load a routing trace recorded.

usage: plan_placement.py TRACE --workers W [--slots S] [--out P.json] [--current P.json]
                         [--keep-within F] [--tool PATH]

Runs moe-plan-placement --trace TRACE (it counts each (layer, expert)'s token-choices in the
trace; EPLB + local search; it prints its own prediction, with a replicated expert's load split
evenly), which writes the placement to --out (default: TRACE.placement.json), then
replays the trace under the placement before (--current, else the coordinator's contiguous
default) and after with the runtime's split rule and prints each layer's per-worker load and
balancedness. The tool is --tool, else $MOE_BIN/moe-plan-placement, else ../build/bin next to
this script. Exit status 1 with a one-line message on a bad trace, placement or tool failure.
"""
import argparse
import os
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import routing_trace as rt  # noqa: E402
import expert_placement as ep  # noqa: E402

TOOL = "moe-plan-placement"


def find_tool(explicit):
    if explicit:
        return explicit
    if os.environ.get("MOE_BIN"):
        return os.path.join(os.environ["MOE_BIN"], TOOL)
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "build", "bin", TOOL)


def replay_table(title, counts):
    """Per layer the replayed token-choices per worker and the balancedness; then overall."""
    layers = rt.layer_imbalance(counts)
    width = max(7, len(str(int(counts.max()))) + 1) if counts.size else 7
    lines = [title, "layer" + "".join(f"w{w + 1}".rjust(width) for w in range(counts.shape[1])) + "    bal"]
    for layer, (row, d) in enumerate(zip(counts, layers)):
        cells = "".join(str(int(c)).rjust(width) for c in row)
        lines.append(f"{layer:5d}{cells}  {d['balancedness']:5.3f}")
    overall = rt.overall_imbalance(counts)
    lines.append(f"  all{' ' * (width * counts.shape[1])}  {overall['balancedness']:5.3f}")
    return lines, overall


def parse_args(argv):
    p = argparse.ArgumentParser(description="Plan an expert placement from a routing trace.")
    p.add_argument("trace", help="routing trace file (docs/routing-trace-format.md)")
    p.add_argument("--workers", type=int, required=True, help="worker ranks 1..W")
    p.add_argument("--slots", type=int, default=0,
                   help="expert slots per worker per layer (default: moe-plan-placement's)")
    p.add_argument("--out", help="placement file to write (default: TRACE.placement.json)")
    p.add_argument("--current", help="today's placement, to compare with and keep experts on")
    p.add_argument("--keep-within", type=float, default=0.0,
                   help="accept a busiest load this fraction above the best if fewer experts move")
    p.add_argument("--tool", help=f"path of {TOOL}")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    prog = os.path.basename(sys.argv[0]) or "plan_placement.py"

    def fail(message):
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 1

    try:
        trace = rt.load(args.trace)
        before = (ep.load_placement(args.current, trace.n_layers, trace.n_experts) if args.current
                  else ep.contiguous_placement(trace.n_layers, trace.n_experts, args.workers))
    except (ValueError, OSError) as e:
        return fail(e)
    out = args.out or args.trace + ".placement.json"
    tool = find_tool(args.tool)
    cmd = [tool, "--trace", args.trace, "--workers", str(args.workers), "--out", out,
           "--keep-within", str(args.keep_within)]
    if args.slots:
        cmd += ["--expert-slots", str(args.slots)]
    if args.current:
        cmd += ["--current", args.current]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as e:
        return fail(f"cannot run {tool}: {e} (build it, or pass --tool / set MOE_BIN)")
    if p.returncode != 0:
        err = p.stderr.strip()
        return fail(err.splitlines()[-1] if err else f"{tool} exited {p.returncode}")
    print(p.stdout, end="")
    try:
        after = ep.load_placement(out, trace.n_layers, trace.n_experts)
    except (ValueError, OSError) as e:
        return fail(e)
    # The placements may name fewer ranks than --workers only if one hosts nothing; pad to W.
    counts = []
    for placement in (before, after):
        c = ep.replay_worker_counts(trace, placement)
        counts.append(np.pad(c, ((0, 0), (0, max(0, args.workers - c.shape[1])))))
    print(f"\nreplayed {len(trace.records)} records of {trace.path} with the runtime's split rule:")
    lines_before, o_before = replay_table(f"before ({args.current or 'contiguous blocks'})", counts[0])
    lines_after, o_after = replay_table(f"after ({out})", counts[1])
    print("\n".join(lines_before + [""] + lines_after))
    print(f"worker balancedness over all layers: {o_before['balancedness']:.3f} before, "
          f"{o_after['balancedness']:.3f} after")
    return 0


if __name__ == "__main__":
    sys.exit(main())
