#!/usr/bin/env python3
"""Expert load balance and routing locality of a routing trace (docs/routing-trace-format.md).

usage: analyze_routing.py TRACE [--out DIR] [--json FILE] [--window-steps N] [--title T]
                          [--placement P.json]

Prints a summary (records, requests, steps, time span; per layer the expert and worker load with
balancedness, imbalance ratio and CV; temporal locality against chance; the overall imbalance)
and writes into DIR (default: the trace's directory)
  heatmap.png      share of each layer's token-choices per expert
  worker_load.png  token-choices per second per worker in bins of wall-clock time
  locality.png     per layer, how often consecutive tokens repeat the first choice / share an expert
--placement P.json also predicts the worker load under another placement (replicas included) by
replaying every step and layer with the runtime's split rule (expert_placement.replay_worker_counts).
--json FILE writes every figure computed as JSON. Exit status 1 with a one-line message on a bad
trace. Needs numpy and matplotlib (Debian's python3-numpy, python3-matplotlib).
"""
import argparse
import json
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import routing_trace as rt  # noqa: E402
import expert_placement as ep  # noqa: E402

TARGET_BUCKETS = 100  # default --window-steps aims at about this many step windows (the JSON)
TIME_BINS = 60  # worker_load.png: bins of wall-clock time


# ----------------------------------------------------------------------------------------------
# Figures


def summarize(trace):
    rec = trace.records
    n = len(rec)
    steps = np.unique(rec["step"])
    return dict(
        records=n,
        requests=int(np.unique(rec["request_id"]).size),
        steps=int(steps.size),
        first_step=int(steps[0]) if n else None,
        last_step=int(steps[-1]) if n else None,
        first_time_s=float(rec["time"].min()) if n else None,
        last_time_s=float(rec["time"].max()) if n else None,
        time_span_s=float(rec["time"].max() - rec["time"].min()) if n else 0.0,
        dropped_bytes=int(trace.dropped_bytes),
    )


def default_window(trace):
    if len(trace.records) == 0:
        return 1
    step = trace.records["step"].astype(np.int64)
    return max(1, math.ceil((int(step.max()) - int(step.min()) + 1) / TARGET_BUCKETS))


def replay_figures(trace, placement, name):
    """The worker load of `trace` under `placement` (an expert_placement.Placement), replayed."""
    workers = ep.replay_worker_counts(trace, placement)
    return dict(placement=name, n_workers=placement.n_workers, expert_slots=placement.expert_slots,
                replicas=[sum(len(r) - 1 for r in row) for row in placement.replicas],
                worker_counts=workers.tolist(),
                worker_imbalance=dict(layers=rt.layer_imbalance(workers),
                                      overall=rt.overall_imbalance(workers)))


def compute(trace, window_steps, placement=None, placement_name=None):
    """Every figure of the analysis, as JSON-ready Python values; with a placement, also its
    replayed worker load (placement_replay)."""
    experts = rt.expert_counts(trace)
    workers = rt.experts_to_workers(experts, trace.placement, trace.n_workers)
    has_workers = trace.n_workers > 0
    buckets = rt.bucketed_worker_load(trace, window_steps)
    edges, timed_choices, timed_workers = rt.timed_worker_load(trace, TIME_BINS)
    figures = dict(
        trace=trace.path,
        header=dict(version=trace.version, n_layers=trace.n_layers, n_experts=trace.n_experts,
                    top_k=trace.top_k, n_workers=trace.n_workers, start_time=trace.start_time,
                    placement=trace.placement.tolist()),
        summary=summarize(trace),
        expert_counts=experts.tolist(),
        worker_counts=workers.tolist(),
        expert_imbalance=dict(layers=rt.layer_imbalance(experts),
                              overall=rt.overall_imbalance(experts)),
        worker_imbalance=(dict(layers=rt.layer_imbalance(workers),
                               overall=rt.overall_imbalance(workers)) if has_workers else None),
        locality=rt.locality(trace),
        worker_load_over_time=dict(window_steps=buckets.window_steps,
                                   first_step=buckets.first_step.tolist(),
                                   end_time_s=buckets.end_time.tolist(),
                                   choices=buckets.choices.tolist(),
                                   workers=buckets.workers.tolist()),
        worker_load_over_wall_time=dict(edges_s=edges.tolist(), choices=timed_choices.tolist(),
                                        workers=timed_workers.tolist()),
    )
    if placement is not None:
        figures["placement_replay"] = replay_figures(trace, placement, placement_name)
    return figures


# ----------------------------------------------------------------------------------------------
# Text report


def _pct(x):
    return "    -" if x is None else f"{100 * x:5.1f}"


def _stats(d):
    return f"{d['balancedness']:5.3f} {d['imbalance_ratio']:6.3f} {d['cv']:5.3f}"


def _load_table(title, counts, per_layer, overall, label, first_index):
    """Per layer: the counts (when few enough columns to read) and the imbalance figures."""
    show = counts.shape[1] <= 16
    width = max(6, len(str(int(counts.max()))) + 1) if counts.size else 6
    cols = "".join(f"{label}{i + first_index}".rjust(width) for i in range(counts.shape[1])) if show else ""
    lines = [title, f"layer{cols}   bal  ratio    cv"]
    for layer, (row, d) in enumerate(zip(counts, per_layer)):
        cells = "".join(str(int(c)).rjust(width) for c in row) if show else ""
        lines.append(f"{layer:5d}{cells}  {_stats(d)}")
    lines.append(f"  all{' ' * (width * counts.shape[1] if show else 0)}  {_stats(overall)}")
    return lines


def _locality_table(loc):
    lines = [f"temporal locality: {loc['pairs']} consecutive-token pairs; "
             f"chance: first choice {_pct(loc['chance_first_choice']).strip()}%, "
             f"set overlap {_pct(loc['chance_set_overlap']).strip()}%",
             "layer  first-repeat%  set-overlap%"]
    for d in loc["layers"]:
        lines.append(f"{d['layer']:5d}  {_pct(d['first_choice_ratio']):>13}  "
                     f"{_pct(d['set_overlap_ratio']):>12}")
    t = loc["total"]
    lines.append(f"  all  {_pct(t['first_choice_ratio']):>13}  {_pct(t['set_overlap_ratio']):>12}")
    return lines


def report(figures):
    h, s = figures["header"], figures["summary"]
    lines = [f"{figures['trace']}: {h['n_layers']} layers, {h['n_experts']} experts, top-{h['top_k']}, "
             f"{h['n_workers'] or 'no'} workers",
             f"records {s['records']}, requests {s['requests']}, steps {s['steps']}"
             + (f" ({s['first_step']}..{s['last_step']})" if s["records"] else "")
             + f", time span {s['time_span_s']:.3f} s"]
    if s["dropped_bytes"]:
        lines.append(f"dropped a trailing partial record ({s['dropped_bytes']} bytes)")
    ei = figures["expert_imbalance"]
    lines += [""] + _load_table("expert load (token-choices) per layer",
                                np.array(figures["expert_counts"]), ei["layers"], ei["overall"], "e", 0)
    wi = figures["worker_imbalance"]
    if wi is not None:
        lines += [""] + _load_table("worker load (token-choices) per layer",
                                    np.array(figures["worker_counts"]), wi["layers"], wi["overall"], "w", 1)
    pr = figures.get("placement_replay")
    if pr is not None:
        lines += [""] + _load_table(f"worker load (token-choices) per layer under {pr['placement']} "
                                    f"(replayed with the split rule; replicas per layer: "
                                    f"{', '.join(map(str, pr['replicas']))})",
                                    np.array(pr["worker_counts"]), pr["worker_imbalance"]["layers"],
                                    pr["worker_imbalance"]["overall"], "w", 1)
    lines += [""] + _locality_table(figures["locality"])
    lines += ["", "overall imbalance (sum over layers of mean / of max; CV of the layer-summed load):",
              f"  experts: balancedness {ei['overall']['balancedness']:.3f}, "
              f"imbalance ratio {ei['overall']['imbalance_ratio']:.3f}, CV {ei['overall']['cv']:.3f}"]
    if wi is not None:
        lines.append(f"  workers: balancedness {wi['overall']['balancedness']:.3f}, "
                     f"imbalance ratio {wi['overall']['imbalance_ratio']:.3f}, CV {wi['overall']['cv']:.3f}")
    if pr is not None:
        o = pr["worker_imbalance"]["overall"]
        lines.append(f"  workers under {pr['placement']}: balancedness {o['balancedness']:.3f}, "
                     f"imbalance ratio {o['imbalance_ratio']:.3f}, CV {o['cv']:.3f}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Plots


def _title(base, user_title):
    return f"{user_title}: {base}" if user_title else base


def plot_heatmap(plt, figures, path, title):
    from matplotlib.colors import TwoSlopeNorm

    counts = np.array(figures["expert_counts"], dtype=np.float64)
    n_layers, n_experts = counts.shape
    totals = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    uniform = 1.0 / n_experts
    # Diverging colours centred on the uniform share: red = overloaded, blue = underloaded.
    norm = TwoSlopeNorm(vmin=0.0, vcenter=uniform, vmax=max(float(share.max()), 2 * uniform))
    fig, ax = plt.subplots(figsize=(2.5 + 0.8 * min(n_experts, 40), max(3.5, 1.6 + 0.32 * n_layers)))
    im = ax.imshow(share, cmap="RdBu_r", norm=norm, aspect="auto", interpolation="nearest")
    if n_experts <= 32 and n_layers <= 64:
        size = 8 if n_layers <= 16 else 7
        for (layer, e), v in np.ndenumerate(share):
            dark = abs(norm(v) - 0.5) > 0.3
            ax.text(e, layer, f"{100 * v:.1f}", ha="center", va="center", fontsize=size,
                    color="white" if dark else "black")
    ax.set_xlabel("expert")
    ax.set_ylabel("layer")
    if n_experts <= 32:
        ax.set_xticks(range(n_experts))
    if n_layers <= 64:
        ax.set_yticks(range(n_layers))
    bar = fig.colorbar(im, ax=ax, fraction=0.05, pad=0.02, aspect=max(20, 1.2 * n_layers))
    bar.set_label(f"share (white = uniform {100 * uniform:.1f}%)")
    bar.ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{100 * v:.0f}%"))
    ax.set_title(_title("expert load per layer (% of the layer's token-choices)", title))
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")  # nothing (legend, long title) cut off
    plt.close(fig)


def plot_worker_load(plt, figures, path, title):
    """Top: token-choices per second per worker in bins of wall-clock time (bins of steps would
    follow the batch sizes, not the load). Bottom: each worker's share of the bin, against the
    even share. A single-process trace has only the top panel, with the total."""
    over = figures["worker_load_over_wall_time"]
    edges = np.array(over["edges_s"])
    t = (edges[1:] + edges[:-1]) / 2
    per_s = 1.0 / max(float(edges[1] - edges[0]), 1e-12)
    choices = np.array(over["choices"], dtype=np.float64)
    workers = np.array(over["workers"], dtype=np.float64).reshape(len(t), figures["header"]["n_workers"])
    n_workers = workers.shape[1]
    if n_workers == 0:
        fig, top = plt.subplots(figsize=(10, 4))
        top.plot(t, choices * per_s, marker=".", label="all (single process, no workers)")
        axes = [top]
    else:
        fig, axes = plt.subplots(2, 1, figsize=(10, 6.5), sharex=True,
                                 gridspec_kw=dict(height_ratios=[3, 2]))
        top, bottom = axes
        share = np.divide(workers, choices[:, None], out=np.full_like(workers, np.nan),
                          where=choices[:, None] > 0)
        for w in range(n_workers):
            top.plot(t, workers[:, w] * per_s, marker=".", label=f"worker {w + 1}")
            bottom.plot(t, 100 * share[:, w], marker=".")
        bottom.axhline(100 / n_workers, color="gray", linestyle="--", linewidth=1, label="even share")
        bottom.set_ylabel("% of the bin's choices")
        bottom.legend(loc="upper right", fontsize=8)
    top.set_ylabel(f"token-choices per second ({edges[1] - edges[0]:.3g} s bins)")
    top.legend(loc="upper right", fontsize=8, ncol=max(1, n_workers // 8))
    top.set_title(_title("worker load over wall-clock time", title))
    axes[-1].set_xlabel("time since trace start (s)")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")  # nothing (legend, long title) cut off
    plt.close(fig)


def plot_locality(plt, figures, path, title):
    loc = figures["locality"]
    n_layers = len(loc["layers"])

    def ratios(key):  # None (no pairs) plots as no bar
        return np.array([np.nan if d[key] is None else 100 * d[key] for d in loc["layers"]])

    x = np.arange(n_layers)
    fig, ax = plt.subplots(figsize=(max(7.5, 1.5 + 0.35 * n_layers), 4.8))
    ax.bar(x - 0.2, ratios("first_choice_ratio"), 0.4, color="C0", label="first choice repeats")
    ax.bar(x + 0.2, ratios("set_overlap_ratio"), 0.4, color="C1", label="expert sets overlap")
    ax.axhline(100 * loc["chance_first_choice"], color="C0", linestyle="--", linewidth=1.2, zorder=3,
               label="chance, first choice")
    ax.axhline(100 * loc["chance_set_overlap"], color="C1", linestyle="--", linewidth=1.2, zorder=3,
               label="chance, overlap")
    if n_layers <= 64:
        ax.set_xticks(x)
    ax.set_xlabel("layer")
    ax.set_ylabel("% of consecutive-token pairs")
    ax.set_ylim(0, 135)  # headroom for the two-row legend above the 100% mark
    ax.set_yticks(range(0, 101, 20))
    t = loc["total"]
    ax.set_title(_title(f"routing locality, {loc['pairs']} pairs", title) +
                 f"\nall layers: first choice repeats {_pct(t['first_choice_ratio']).strip()}%, "
                 f"sets overlap {_pct(t['set_overlap_ratio']).strip()}%", fontsize=10)
    ax.legend(loc="upper center", fontsize=8, ncol=2)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")  # nothing (legend, long title) cut off
    plt.close(fig)


def write_plots(figures, out_dir, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = {name: os.path.join(out_dir, name + ".png") for name in ("heatmap", "worker_load", "locality")}
    plot_heatmap(plt, figures, paths["heatmap"], title)
    plot_worker_load(plt, figures, paths["worker_load"], title)
    plot_locality(plt, figures, paths["locality"], title)
    return paths


# ----------------------------------------------------------------------------------------------


def parse_args(argv):
    p = argparse.ArgumentParser(description="Expert load balance and routing locality of a routing trace.")
    p.add_argument("trace", help="routing trace file (docs/routing-trace-format.md)")
    p.add_argument("--out", help="directory for the PNGs (default: the trace's directory)")
    p.add_argument("--json", help="write every computed figure to this JSON file")
    p.add_argument("--window-steps", type=int, default=None,
                   help=f"steps per window of the JSON's worker_load_over_time (default: about {TARGET_BUCKETS})")
    p.add_argument("--title", default="", help="prefix for the plot titles")
    p.add_argument("--placement", help="also predict the worker load under this placement file "
                   "(JSON, replicas allowed), replayed with the runtime's split rule")
    args = p.parse_args(argv)
    if args.window_steps is not None and args.window_steps < 1:
        p.error("--window-steps must be at least 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    prog = os.path.basename(sys.argv[0]) or "analyze_routing.py"
    try:
        trace = rt.load(args.trace)
    except (ValueError, OSError) as e:  # a bad or unreadable trace; anything else is a bug
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    placement = None
    if args.placement:
        try:
            placement = ep.load_placement(args.placement, trace.n_layers, trace.n_experts)
        except (ValueError, OSError) as e:
            print(f"{prog}: error: {e}", file=sys.stderr)
            return 1
    figures = compute(trace, args.window_steps or default_window(trace), placement, args.placement)
    print(report(figures))
    try:
        out_dir = args.out or os.path.dirname(os.path.abspath(args.trace))
        os.makedirs(out_dir, exist_ok=True)
        paths = write_plots(figures, out_dir, args.title)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(figures, f, indent=1)
                f.write("\n")
    except OSError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    print("\nwrote " + ", ".join(paths.values()) + (f", {args.json}" if args.json else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
