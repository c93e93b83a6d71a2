"""The plots of the routing study (scripts/routing_study.py): token classes, inter-layer
affinity, router confidence and load over wall-clock time, beside analyze_routing.py's heatmap,
worker load and locality plots. Each takes the figures routing_study.compute() returned.
"""
import os

import numpy as np

import analyze_routing


def percent(x, digits=1):
    """A ratio as a percentage, "-" where there is none."""
    return "-" if x is None else f"{100 * x:.{digits}f}%"


def plot_classes(plt, f, path, title, n_experts):
    from matplotlib.colors import TwoSlopeNorm
    classes = f["classes"]
    L = len(classes[0]["share"]) if classes else 0
    fig, axes = plt.subplots(1, L, figsize=(2.2 + 2.6 * L, 0.5 * len(classes) + 2.2), sharey=True, squeeze=False)
    uniform = 1.0 / n_experts
    vmax = max(2 * uniform, max(max(max(r) for r in c["share"]) for c in classes))
    norm = TwoSlopeNorm(vmin=0, vcenter=uniform, vmax=vmax)
    for l, ax in enumerate(axes[0]):
        m = np.array([c["share"][l] for c in classes])
        im = ax.imshow(m, cmap="RdBu_r", norm=norm, aspect="auto")
        for (i, e), v in np.ndenumerate(m):
            ax.text(e, i, f"{100 * v:.0f}", ha="center", va="center", fontsize=7,
                    color="white" if abs(norm(v) - 0.5) > 0.3 else "black")
        ax.set_title(f"layer {l}", fontsize=9)
        ax.set_xticks(range(n_experts))
        ax.set_xlabel("expert")
        ax.set_yticks(range(len(classes)))
        ax.set_yticklabels([f"{c['cls']} ({c['tokens']})" for c in classes], fontsize=8)
    bar = fig.colorbar(im, ax=axes[0].tolist(), fraction=0.02, pad=0.01)
    bar.set_label(f"% of the class's choices (white = {100 * uniform:.1f}%)")
    fig.suptitle(analyze_routing._title("routing by token class", title), fontsize=10)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def plot_inter_layer(plt, f, path, title):
    rows = f["inter_layer"]
    if not rows:
        return
    fig, axes = plt.subplots(1, len(rows), figsize=(1 + 3.2 * len(rows), 3.6), squeeze=False)
    for ax, d in zip(axes[0], rows):
        m = np.array(d["conditional"])
        im = ax.imshow(m, cmap="viridis", vmin=0, vmax=1, aspect="equal")
        ax.set_title(f"layer {d['layers']}: {percent(d['accuracy'], 0)} vs {percent(d['baseline'], 0)}", fontsize=9)
        ax.set_xlabel(f"first choice at layer {d['layers'].split('->')[1]}")
        ax.set_ylabel(f"first choice at layer {d['layers'].split('->')[0]}")
        ax.set_xticks(range(m.shape[0]))
        ax.set_yticks(range(m.shape[0]))
    fig.colorbar(im, ax=axes[0].tolist(), fraction=0.02, pad=0.01).set_label("P(next | this)")
    fig.suptitle(analyze_routing._title("inter-layer affinity (predicted vs always-commonest)", title), fontsize=10)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def plot_confidence(plt, f, path, title):
    conf = f["confidence"]
    use_entropy = conf["layers"][0]["entropy"] is not None
    key, label = ("entropy", "router entropy (nats)") if use_entropy else ("first_weight", "first choice's weight")
    fig, ax = plt.subplots(figsize=(7.5, 4))
    L = len(conf["layers"])
    x = np.arange(L)
    width = 0.8 / max(1, len(conf["classes"]))
    for i, c in enumerate(conf["classes"]):
        ax.bar(x - 0.4 + width * (i + 0.5), c[key], width, label=f"{c['cls']}")
    if use_entropy:
        ax.axhline(conf["max_entropy"], color="grey", ls="--", lw=1, label="uniform")
    ax.set_xticks(x)
    ax.set_xlabel("layer")
    ax.set_ylabel(label)
    ax.legend(fontsize=8, loc="lower right", ncol=2)
    ax.set_title(analyze_routing._title(f"router confidence by token class: {label}", title), fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_time(plt, f, path, title):
    t = f["time"]
    phases = [(n, p) for n, p in t["phases"].items()]
    if not phases:
        return
    edges = np.array(t["edges"])
    mid = (edges[1:] + edges[:-1]) / 2
    has_workers = phases[0][1]["workers"] is not None
    cols = 2 if has_workers else 1
    fig, axes = plt.subplots(len(phases), cols, figsize=(6 * cols, 2.8 * len(phases) + 0.6), squeeze=False,
                             sharex=True)
    per_s = 1.0 / t["bin_seconds"]
    for r, (name, p) in enumerate(phases):
        ex = np.array(p["experts"], dtype=np.float64) * per_s
        ax = axes[r][0]
        ax.stackplot(mid, ex.T, labels=[f"e{e}" for e in range(ex.shape[1])])
        ax.set_ylabel(f"{name}: choices/s")
        ax.set_title(f"{name}: per expert (all layers)", fontsize=9)
        if r == 0:
            ax.legend(fontsize=7, ncol=4, loc="upper left")
        if has_workers:
            w = np.array(p["workers"], dtype=np.float64) * per_s
            ax2 = axes[r][1]
            ax2.stackplot(mid, w.T, labels=[f"worker {i + 1}" for i in range(w.shape[1])])
            ax2.set_title(f"{name}: per worker", fontsize=9)
            if r == 0:
                ax2.legend(fontsize=7, loc="upper left")
    for ax in axes[-1]:
        ax.set_xlabel("seconds since the trace started")
    fig.suptitle(analyze_routing._title(f"load over wall-clock time ({t['bin_seconds']:.2f} s bins)", title),
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_plots(f, out_dir, title, n_experts):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    paths = analyze_routing.write_plots(f["base"], out_dir, title)
    for name, fn in (("token_classes", lambda p: plot_classes(plt, f, p, title, n_experts)),
                     ("inter_layer", lambda p: plot_inter_layer(plt, f, p, title)),
                     ("confidence", lambda p: plot_confidence(plt, f, p, title)),
                     ("load_time", lambda p: plot_time(plt, f, p, title))):
        paths[name] = os.path.join(out_dir, name + ".png")
        fn(paths[name])
    return paths
