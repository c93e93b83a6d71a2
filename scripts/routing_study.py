#!/usr/bin/env python3
"""The routing study of a trained model, from a routing trace (docs/routing-trace-format.md) and,
optionally, the live telemetry of the same run (a GetLoad snapshot saved as JSON).

usage: routing_study.py TRACE --tokenizer tokenizer.model [--live LIVE.json] [--out DIR]
                        [--time-bins N] [--json FILE] [--title T]

What it measures (the questions of the Mixtral paper, section 5, and of ExFlow):
  load          per layer, each expert's share of the token-choices and the imbalance
                (balancedness = mean / max) (the paper's Figure 7 view: heatmap.png)
  locality      per layer, how often consecutive tokens keep the first choice, and how often their
                expert sets share an expert ("first or second choice"), against chance (Table 5)
  token classes every token as whitespace/indentation, keyword, identifier, punctuation, digits or
                prose (comments, strings) (scripts/token_classes.py): which experts each class
                prefers and how strongly (Figure 8's claim), as a table and token_classes.png
  inter-layer   how well the first choice at layer l predicts the first choice at l+1: the best
                guess's accuracy against always guessing l+1's commonest expert, and mutual
                information; top-k pair co-occurrence within a layer against independence
  confidence    the router's entropy over all experts (version-2 traces) and the renormalised weight
                of the first choice, per layer and token class
  time          load per expert and per worker over wall-clock time (bins of seconds, not steps),
                prefill and decode apart (load_time.png)
  live          the served run's own telemetry (GetLoad) against the trace: expert counts,
                worker counts and locality per layer must agree exactly
Prints the report as Markdown (also DIR/study.md) and writes the PNGs into DIR. Needs numpy and
matplotlib (Debian's python3-numpy, python3-matplotlib).
"""
import argparse
import json
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import analyze_routing  # noqa: E402
import routing_study_plots  # noqa: E402
from routing_study_plots import percent as _p  # noqa: E402
import routing_trace as rt  # noqa: E402
import token_classes as tc  # noqa: E402

# The Mixtral paper (Jiang et al., 2024, Table 5) at layer 15, over its eight datasets: consecutive
# tokens share an expert of their top-2 ("first or second choice") 62-67% of the time, against
# 46% by chance for 8 experts top-2.
PAPER_LAYER15_SET_OVERLAP = (0.62, 0.67)


# ----------------------------------------------------------------------------------------------
# Per-record facts


def sequence_order(trace):
    """Record indices grouped by request, each group in position order: {request_id: indices}."""
    rec = trace.records
    order = np.lexsort((rec["position"], rec["request_id"]))
    req = rec["request_id"][order]
    cuts = np.flatnonzero(req[1:] != req[:-1]) + 1
    return {int(req[s]): order[s:e] for s, e in zip(np.r_[0, cuts], np.r_[cuts, len(order)]) if e > s}


def record_classes(trace, pieces):
    """Token class (index into token_classes.CLASSES) of every record."""
    out = np.zeros(len(trace.records), dtype=np.int8)
    ids = trace.records["token_id"]
    for _, idx in sequence_order(trace).items():
        out[idx] = tc.classify_sequence(ids[idx].tolist(), pieces)
    return out


def prefill_flags(trace, events):
    """Per record: 1 prefill, 0 decode, -1 unknown. From the record flags (version 2), else from
    the events file's prompt lengths (a position before the prompt's end is prefill)."""
    rec = trace.records
    if "flags" in rec.dtype.names and trace.version >= 2:
        return (rec["flags"] & 1).astype(np.int8)
    prompts = {rid: s.get("prompt_tokens") for rid, s in (events or {}).get("sequences", {}).items()}
    if not prompts:
        return np.full(len(rec), -1, dtype=np.int8)
    lengths = np.array([prompts.get(int(r), -1) if prompts.get(int(r)) is not None else -1
                        for r in rec["request_id"]])
    return np.where(lengths < 0, -1, (rec["position"] < lengths).astype(np.int8)).astype(np.int8)


def entropies(trace):
    """[N, L] router entropy in nats, or None when the trace does not record it (version 1)."""
    rec = trace.records
    if "entropy" not in rec.dtype.names:
        return None
    e = rec["entropy"].astype(np.float64)
    return None if e.size == 0 or np.isnan(e).all() else e


# ----------------------------------------------------------------------------------------------
# Figures


def class_preferences(trace, classes):
    """Per class: tokens; per layer its share of choices per expert, the preferred expert, its
    share against the uniform 1/E, and KL(class || layer) in bits (how far the class's routing is
    from the layer's routing of all tokens)."""
    L, E, k = trace.n_layers, trace.n_experts, trace.top_k
    experts = trace.records["experts"].astype(np.int64)  # [N, L, k]
    overall = np.zeros((L, E))
    for l in range(L):
        overall[l] = np.bincount(experts[:, l].ravel(), minlength=E)
    overall /= np.maximum(overall.sum(1, keepdims=True), 1)
    out = []
    for c, name in enumerate(tc.CLASSES):
        mask = classes == c
        n = int(mask.sum())
        if n == 0:
            continue
        share = np.zeros((L, E))
        for l in range(L):
            share[l] = np.bincount(experts[mask, l].ravel(), minlength=E) / (n * k)
        with np.errstate(divide="ignore", invalid="ignore"):
            kl = np.where(share > 0, share * np.log2(share / np.maximum(overall, 1e-12)), 0).sum(1)
        out.append(dict(cls=name, tokens=n, share=share.tolist(), top_expert=share.argmax(1).tolist(),
                        top_share=share.max(1).tolist(), kl_bits=kl.tolist()))
    return out


def shuffled_locality(trace, seed=0):
    """Per layer, the two locality ratios for pairs of tokens drawn at random from the trace (the
    second token of each consecutive pair replaced by a random token): chance that keeps the
    layer's uneven load, which uniform chance (1/E, and the overlap of random k-sets) ignores."""
    a, b = rt.consecutive_pairs(trace)
    if len(a) == 0:
        return [dict(layer=l, first_choice_ratio=None, set_overlap_ratio=None) for l in range(trace.n_layers)]
    rng = np.random.default_rng(seed)
    b = rng.integers(0, len(trace.records), size=len(a))
    ex = trace.records["experts"]
    out = []
    for l in range(trace.n_layers):
        ea, eb = ex[a, l], ex[b, l]
        overlap = np.zeros(len(a), dtype=bool)
        for i in range(trace.top_k):
            for j in range(trace.top_k):
                overlap |= ea[:, i] == eb[:, j]
        out.append(dict(layer=l, first_choice_ratio=float((ea[:, 0] == eb[:, 0]).mean()),
                        set_overlap_ratio=float(overlap.mean())))
    return out


def _entropy_bits(p):
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def inter_layer(trace):
    """For l -> l+1 over every token: first-choice prediction accuracy (best guess given layer
    l's first choice) against the commonest expert of l+1, mutual information in bits and its
    share of H(l+1), and how often the best guess is among l+1's top-k."""
    E = trace.n_experts
    experts = trace.records["experts"].astype(np.int64)
    n = len(experts)
    out = []
    for l in range(trace.n_layers - 1):
        a, b = experts[:, l, 0], experts[:, l + 1, 0]
        joint = np.bincount(a * E + b, minlength=E * E).reshape(E, E).astype(np.float64)
        best = joint.argmax(1)  # per expert at l, the likeliest first choice at l+1
        pa, pb = joint.sum(1) / max(n, 1), joint.sum(0) / max(n, 1)
        pj = joint / max(n, 1)
        mi = _entropy_bits(pa) + _entropy_bits(pb) - _entropy_bits(pj.ravel())
        in_set = (experts[:, l + 1, :] == best[a][:, None]).any(1)
        common = int(pb.argmax())
        out.append(dict(layers=f"{l}->{l + 1}", accuracy=float(joint.max(1).sum() / max(n, 1)),
                        baseline=float(pb.max()), mutual_information_bits=mi,
                        mi_share=mi / max(_entropy_bits(pb), 1e-12),
                        best_in_next_topk=float(in_set.mean()) if n else None,
                        baseline_in_next_topk=float((experts[:, l + 1, :] == common).any(1).mean()) if n else None,
                        conditional=(joint / np.maximum(joint.sum(1, keepdims=True), 1)).tolist()))
    return out


def pair_cooccurrence(trace, top=3, min_count=20):
    """Per layer, pairs of experts chosen together for a token: count and lift = P(both) /
    (P(i chosen) P(j chosen)); the `top` pairs by lift with at least min_count tokens."""
    E = trace.n_experts
    experts = trace.records["experts"].astype(np.int64)
    n = len(experts)
    out = []
    for l in range(trace.n_layers):
        sets = experts[:, l, :]
        chosen = np.zeros((n, E), dtype=bool)
        chosen[np.arange(n)[:, None], sets] = True
        c = chosen.astype(np.float64)
        both = c.T @ c  # [E, E] tokens choosing i and j
        p = c.mean(0)
        with np.errstate(divide="ignore", invalid="ignore"):
            lift = np.where(np.outer(p, p) > 0, (both / max(n, 1)) / np.outer(p, p), 0)
        pairs = [(float(lift[i, j]), int(both[i, j]), i, j) for i in range(E) for j in range(i + 1, E)
                 if both[i, j] >= min_count]
        pairs.sort(reverse=True)
        out.append(dict(layer=l, top=[dict(pair=[i, j], tokens=cnt, lift=lf) for lf, cnt, i, j in pairs[:top]],
                        bottom=[dict(pair=[i, j], tokens=cnt, lift=lf) for lf, cnt, i, j in pairs[-top:]]))
    return out


def confidence(trace, classes):
    """Per layer and per class: mean router entropy (nats; None without it) and mean
    renormalised weight of the first choice."""
    ent = entropies(trace)
    w1 = trace.records["weights"][:, :, 0].astype(np.float64)  # [N, L]
    per_layer = [dict(layer=l, entropy=None if ent is None else float(ent[:, l].mean()),
                      first_weight=float(w1[:, l].mean())) for l in range(trace.n_layers)]
    per_class = []
    for c, name in enumerate(tc.CLASSES):
        m = classes == c
        if not m.any():
            continue
        per_class.append(dict(cls=name, tokens=int(m.sum()),
                              entropy=None if ent is None else ent[m].mean(0).tolist(),
                              first_weight=w1[m].mean(0).tolist()))
    return dict(max_entropy=math.log(trace.n_experts), layers=per_layer, classes=per_class)


def load_over_time(trace, phases, n_bins):
    """Token-choices per expert (all layers) and per worker in n_bins bins of wall-clock time,
    for prefill, decode and unknown tokens apart."""
    rec = trace.records
    t = rec["time"].astype(np.float64)
    if len(t) == 0:
        return dict(edges=[], phases={})
    lo, hi = float(t.min()), float(t.max())
    edges = np.linspace(lo, hi if hi > lo else lo + 1e-3, n_bins + 1)
    b = np.clip(np.searchsorted(edges, t, side="right") - 1, 0, n_bins - 1)
    E, W = trace.n_experts, trace.n_workers
    experts = rec["experts"].astype(np.int64)
    out = {}
    for name, code in (("prefill", 1), ("decode", 0), ("unknown", -1)):
        m = phases == code
        if not m.any():
            continue
        ex = experts[m]  # [n, L, k]
        bins = np.repeat(b[m], ex.shape[1] * ex.shape[2])
        flat = ex.reshape(-1)
        per_expert = np.bincount(bins * E + flat, minlength=n_bins * E).reshape(n_bins, E)
        per_worker = None
        if W > 0:
            layer = np.tile(np.repeat(np.arange(trace.n_layers), trace.top_k), int(m.sum()))
            rank = trace.placement[layer, flat].astype(np.int64)
            per_worker = np.bincount(bins * (W + 1) + rank, minlength=n_bins * (W + 1)).reshape(n_bins, W + 1)[:, 1:]
        out[name] = dict(tokens=int(m.sum()), experts=per_expert.tolist(),
                         workers=None if per_worker is None else per_worker.tolist())
    return dict(edges=edges.tolist(), bin_seconds=float(edges[1] - edges[0]), phases=out)


def step_costs(events):
    """From the events file's step records: exchange and straggler seconds, for steps with
    prompt rows (prefill) and decode-only steps apart, and how the busiest worker's excess rows
    go with the straggler time (Pearson correlation over steps). None without step events."""
    steps = (events or {}).get("steps") or []
    steps = [s for s in steps if s.get("worker_rows")]
    if not steps:
        return None
    out = {}
    for name, pick in (("prefill", lambda s: s.get("prefill_rows", 0) > 0),
                       ("decode", lambda s: s.get("prefill_rows", 0) == 0)):
        sel = [s for s in steps if pick(s)]
        if not sel:
            continue
        rows = np.array([s["worker_rows"] for s in sel], dtype=np.float64)
        excess = np.divide(rows.max(1) - rows.mean(1), rows.mean(1), out=np.zeros(len(sel)),
                           where=rows.mean(1) > 0)
        straggler = np.array([s.get("straggler_seconds", 0.0) for s in sel])
        exchange = np.array([s.get("exchange_seconds", 0.0) for s in sel])
        corr = (float(np.corrcoef(excess, straggler)[0, 1])
                if len(sel) > 2 and excess.std() > 0 and straggler.std() > 0 else None)
        out[name] = dict(steps=len(sel), exchange_seconds=float(exchange.sum()),
                         straggler_seconds=float(straggler.sum()),
                         mean_excess_rows=float(excess.mean()), correlation=corr)
    return out


def label_loads(trace, events):
    """Per request label: tokens, and per layer the balancedness of its expert load."""
    if not (events or {}).get("sequences"):
        return []
    labels = rt.record_labels(trace, events)
    experts = trace.records["experts"].astype(np.int64)
    out = []
    for name in sorted(set(labels.tolist())):
        m = labels == name
        bal = []
        for l in range(trace.n_layers):
            c = np.bincount(experts[m, l].ravel(), minlength=trace.n_experts)
            bal.append(float(c.mean() / c.max()) if c.max() else None)
        out.append(dict(label=name, tokens=int(m.sum()), balancedness=bal))
    return out


def live_agreement(trace, figures, live, trace_labels=None):
    """The live GetLoad snapshot (JSON with the proto's field names) against the trace: per layer
    the expert counts, the worker counts and the locality counts. Equal means equal."""
    layers = live.get("layers", [])
    expert = np.array(figures["expert_counts"], dtype=np.int64)
    worker = np.array(figures["worker_counts"], dtype=np.int64)
    loc = figures["locality"]["layers"]
    rows, all_equal = [], True
    for l, ll in enumerate(layers[:trace.n_layers]):
        le = np.array([int(x) for x in ll.get("expert_tokens", [])], dtype=np.int64)
        lw = np.array([int(x) for x in ll.get("worker_tokens", [])], dtype=np.int64)
        lloc = ll.get("locality", {})
        row = dict(layer=l,
                   expert_equal=le.shape == expert[l].shape and bool((le == expert[l]).all()),
                   expert_max_diff=int(np.abs(le - expert[l]).max()) if le.shape == expert[l].shape else None,
                   worker_equal=(lw.shape == worker[l].shape and bool((lw == worker[l]).all())) if worker.size else None,
                   pairs=(int(lloc.get("pairs", 0)), loc[l]["pairs"]),
                   first_repeats=(int(lloc.get("first_choice_repeats", 0)), loc[l]["first_choice_repeats"]),
                   set_overlaps=(int(lloc.get("set_overlaps", 0)), loc[l]["set_overlaps"]))
        row["locality_equal"] = all(a == b for a, b in (row["pairs"], row["first_repeats"], row["set_overlaps"]))
        all_equal &= row["expert_equal"] and row["locality_equal"] and row["worker_equal"] is not False
        rows.append(row)
    labels = []
    if live.get("labels") and trace_labels is not None:
        experts = trace.records["experts"].astype(np.int64)
        for entry in live["labels"]:
            name = entry.get("label", "")
            m = trace_labels == name
            counts = np.stack([np.bincount(experts[m, l].ravel(), minlength=trace.n_experts)
                               for l in range(trace.n_layers)]).ravel()
            got = np.array([int(x) for x in entry.get("expert_tokens", [])], dtype=np.int64)
            equal = got.shape == counts.shape and bool((got == counts).all())
            labels.append(dict(label=name, equal=equal, live_choices=int(got.sum()), trace_choices=int(counts.sum())))
            all_equal &= equal
    return dict(layers=rows, labels=labels, all_equal=bool(all_equal and len(rows) == trace.n_layers),
                live_tokens=int(live.get("tokens", 0)), trace_records=len(trace.records))


def compute(trace, pieces, events=None, live=None, time_bins=40):
    base = analyze_routing.compute(trace, analyze_routing.default_window(trace))
    classes = record_classes(trace, pieces)
    phases = prefill_flags(trace, events)
    labels = {}
    for s in (events or {}).get("sequences", {}).values():
        labels[s.get("label", "")] = labels.get(s.get("label", ""), 0) + 1
    figures = dict(base=base, classes=class_preferences(trace, classes),
                   class_counts={name: int((classes == c).sum()) for c, name in enumerate(tc.CLASSES)},
                   inter_layer=inter_layer(trace), pairs=pair_cooccurrence(trace),
                   shuffled_locality=shuffled_locality(trace),
                   confidence=confidence(trace, classes), time=load_over_time(trace, phases, time_bins),
                   phases={"prefill": int((phases == 1).sum()), "decode": int((phases == 0).sum()),
                           "unknown": int((phases == -1).sum())},
                   labels=labels, steps=step_costs(events), label_loads=label_loads(trace, events))
    if live is not None:
        figures["live"] = live_agreement(
            trace, base, live, rt.record_labels(trace, events) if (events or {}).get("sequences") else None)
    return figures


# ----------------------------------------------------------------------------------------------
# The report, in Markdown


def report(f, title):
    b = f["base"]
    h, s = b["header"], b["summary"]
    L, E = h["n_layers"], h["n_experts"]
    out = [f"# Routing study: {title}" if title else "# Routing study", "",
           f"Trace `{os.path.basename(b['trace'])}`: {s['records']} tokens of {s['requests']} requests in "
           f"{s['steps']} steps over {s['time_span_s']:.1f} s; {L} layers, {E} experts, top-{h['top_k']}, "
           f"{h['n_workers'] or 'no'} workers. Prefill {f['phases']['prefill']} tokens, decode "
           f"{f['phases']['decode']}" + (f", unknown {f['phases']['unknown']}" if f["phases"]["unknown"] else "")
           + "." + (f" Requests by label: {', '.join(f'{k or chr(34) * 2}: {v}' for k, v in f['labels'].items())}."
                    if f["labels"] else ""), ""]
    # Load (Figure 7's view)
    ei = b["expert_imbalance"]
    out += ["## Expert load per layer (heatmap.png)", "",
            "| layer | " + " | ".join(f"e{e}" for e in range(E)) + " | balancedness | CV |",
            "|---" * (E + 3) + "|"]
    counts = np.array(b["expert_counts"], dtype=np.float64)
    for l in range(L):
        share = counts[l] / max(counts[l].sum(), 1)
        d = ei["layers"][l]
        out.append(f"| {l} | " + " | ".join(f"{100 * x:.1f}" for x in share)
                   + f" | {d['balancedness']:.3f} | {d['cv']:.3f} |")
    pooled = counts.sum(0)
    out += ["", f"Shares in % of the layer's token-choices (uniform: {100 / E:.1f}%). All layers: balancedness "
            f"{ei['overall']['balancedness']:.3f} (each layer waits for its own busiest expert). The load "
            f"summed over layers, which is what `transformers`' load-balancing loss balances (it pools every "
            f"layer's counts before the product), has balancedness "
            f"{pooled.mean() / max(pooled.max(), 1):.3f}.", ""]
    # Locality (Table 5)
    loc = b["locality"]
    out += ["## Temporal locality (the paper's Table 5; locality.png)", "",
            f"{loc['pairs']} pairs of consecutive tokens of the same request.", "",
            "Chance is given twice: uniform (the paper's: 1/E, and two random k-sets of E overlapping) and "
            "for random pairs of this trace's tokens (keeps each layer's uneven load, which alone raises "
            "both figures).", "",
            "| layer | first choice repeats | chance: uniform, random pairs | first or second choice (sets overlap) "
            "| chance: uniform, random pairs |", "|---|---|---|---|---|"]
    for d, r in zip(loc["layers"], f["shuffled_locality"]):
        out.append(f"| {d['layer']} | {_p(d['first_choice_ratio'])} | {_p(loc['chance_first_choice'])}, "
                   f"{_p(r['first_choice_ratio'])} | {_p(d['set_overlap_ratio'])} | "
                   f"{_p(loc['chance_set_overlap'])}, {_p(r['set_overlap_ratio'])} |")
    out += [f"| Mixtral-8x7B, layer 15 (paper) | | | {PAPER_LAYER15_SET_OVERLAP[0] * 100:.0f}-"
            f"{PAPER_LAYER15_SET_OVERLAP[1] * 100:.0f}% | 46% |", ""]
    # Token classes (Figure 8)
    out += ["## Routing by token class (token_classes.png)", "",
            "Per class and layer: the preferred expert, its share of the class's choices (uniform "
            f"{100 / E:.1f}%) and KL(class || all tokens of the layer) in bits.", "",
            "| class | tokens | " + " | ".join(f"layer {l}" for l in range(L)) + " |", "|---" * (L + 2) + "|"]
    for c in f["classes"]:
        cells = [f"e{c['top_expert'][l]} {100 * c['top_share'][l]:.0f}%, {c['kl_bits'][l]:.2f} b" for l in range(L)]
        out.append(f"| {c['cls']} | {c['tokens']} | " + " | ".join(cells) + " |")
    out.append("")
    # Inter-layer affinity and pairs
    out += ["## Inter-layer affinity (inter_layer.png) and expert pairs", "",
            "| layers | first choice predicted | always the commonest | mutual information | "
            "best guess in next top-k | commonest in next top-k |", "|---|---|---|---|---|---|"]
    for d in f["inter_layer"]:
        out.append(f"| {d['layers']} | {_p(d['accuracy'])} | {_p(d['baseline'])} | "
                   f"{d['mutual_information_bits']:.2f} b ({_p(d['mi_share'], 0)} of H) | "
                   f"{_p(d['best_in_next_topk'])} | {_p(d['baseline_in_next_topk'])} |")
    out += ["", "Pairs chosen together for one token, by lift = P(both) / (P(i) P(j)) (1 = independent):", "",
            "| layer | most together | least together |", "|---|---|---|"]
    for d in f["pairs"]:
        def fmt(ps):
            return ", ".join(f"{p['pair'][0]}+{p['pair'][1]} x{p['lift']:.2f}" for p in ps)
        out.append(f"| {d['layer']} | {fmt(d['top'])} | {fmt(d['bottom'])} |")
    out.append("")
    # Confidence
    conf = f["confidence"]
    out += ["## Router confidence (confidence.png)", "",
            f"Entropy of the router's softmax over all {E} experts (nats; uniform = {conf['max_entropy']:.3f}) and "
            "the first choice's renormalised weight (0.5 = a tie with the second).", "",
            "| | " + " | ".join(f"layer {l}" for l in range(L)) + " |", "|---" * (L + 1) + "|"]
    if conf["layers"][0]["entropy"] is not None:
        out.append("| entropy, all tokens | " + " | ".join(f"{d['entropy']:.3f}" for d in conf["layers"]) + " |")
    out.append("| first weight, all tokens | " + " | ".join(f"{d['first_weight']:.3f}" for d in conf["layers"]) + " |")
    for c in conf["classes"]:
        if c["entropy"] is not None:
            out.append(f"| entropy, {c['cls']} | " + " | ".join(f"{x:.3f}" for x in c["entropy"]) + " |")
    for c in conf["classes"]:
        out.append(f"| first weight, {c['cls']} | " + " | ".join(f"{x:.3f}" for x in c["first_weight"]) + " |")
    out.append("")
    # Time
    t = f["time"]
    if t["phases"]:
        out += ["## Load over wall-clock time (load_time.png)", "",
                f"{len(t['edges']) - 1} bins of {t['bin_seconds']:.2f} s. Per phase, the busiest worker's share "
                "of the choices (mean over bins with any, and the worst bin):", ""]
        for name, p in t["phases"].items():
            if p["workers"] is None:
                continue
            w = np.array(p["workers"], dtype=np.float64)
            tot = w.sum(1)
            keep = tot > 0
            share = w[keep].max(1) / tot[keep] if keep.any() else np.zeros(0)
            out.append(f"- {name}: {p['tokens']} tokens; busiest worker {_p(float(share.mean()) if share.size else None)} "
                       f"on average, {_p(float(share.max()) if share.size else None)} at worst "
                       f"(even: {_p(1 / w.shape[1])})")
        out.append("")
    # Time lost
    if f.get("steps"):
        out += ["## Time lost to imbalance (the events file's step records)", "",
                "Per step, the straggler time is the sum over layers of the slowest worker's expert time minus "
                "the mean; excess rows = (busiest worker's rows - mean) / mean.", "",
                "| steps | count | exchange s | straggler s | straggler share | mean excess rows | "
                "correlation(excess rows, straggler) |", "|---|---|---|---|---|---|---|"]
        for name, d in f["steps"].items():
            share = d["straggler_seconds"] / d["exchange_seconds"] if d["exchange_seconds"] else None
            corr = "-" if d["correlation"] is None else f"{d['correlation']:.2f}"
            out.append(f"| {name} | {d['steps']} | {d['exchange_seconds']:.3f} | {d['straggler_seconds']:.3f} | "
                       f"{_p(share)} | {_p(d['mean_excess_rows'])} | {corr} |")
        out.append("")
    if f.get("label_loads"):
        out += ["## Load by request label", "", "| label | tokens | " +
                " | ".join(f"balancedness, layer {l}" for l in range(L)) + " |", "|---" * (L + 2) + "|"]
        for d in f["label_loads"]:
            out.append(f"| {d['label'] or '(none)'} | {d['tokens']} | " +
                       " | ".join("-" if b is None else f"{b:.3f}" for b in d["balancedness"]) + " |")
        out.append("")
    # Live
    if "live" in f:
        lv = f["live"]
        out += ["## The served run's telemetry against the trace", "",
                f"GetLoad counted {lv['live_tokens']} tokens; the trace holds {lv['trace_records']}.", "",
                "| layer | expert counts | worker counts | locality pairs (live, trace) | first repeats | overlaps |",
                "|---|---|---|---|---|---|"]
        for r in lv["layers"]:
            out.append(f"| {r['layer']} | {'equal' if r['expert_equal'] else 'differ by ' + str(r['expert_max_diff'])} | "
                       f"{'-' if r['worker_equal'] is None else ('equal' if r['worker_equal'] else 'differ')} | "
                       f"{r['pairs'][0]}, {r['pairs'][1]} | {r['first_repeats'][0]}, {r['first_repeats'][1]} | "
                       f"{r['set_overlaps'][0]}, {r['set_overlaps'][1]} |")
        for d in lv.get("labels", []):
            out.append(f"\nLabel `{d['label'] or '(none)'}`: expert choices per (layer, expert) "
                       f"{'equal' if d['equal'] else 'differ'} (live {d['live_choices']}, trace {d['trace_choices']}).")
        out += ["", "Live telemetry and trace agree exactly." if lv["all_equal"]
                else "**Live telemetry and trace differ** (see the rows above).", ""]
    return "\n".join(out)


# ----------------------------------------------------------------------------------------------


def main(argv=None):
    p = argparse.ArgumentParser(description="Routing study of a routing trace.")
    p.add_argument("trace")
    p.add_argument("--tokenizer", required=True, help="the model's tokenizer.model (token classes)")
    p.add_argument("--live", help="GetLoad snapshot of the same run, as JSON (scripts/study_feed.py --live)")
    p.add_argument("--out", help="directory for study.md and the PNGs (default: the trace's directory)")
    p.add_argument("--json", help="write every figure as JSON")
    p.add_argument("--time-bins", type=int, default=40)
    p.add_argument("--title", default="")
    a = p.parse_args(argv)
    prog = "routing_study.py"
    try:
        trace = rt.load(a.trace)
        events = rt.load_events(a.trace) if hasattr(rt, "load_events") else None
        pieces = tc.piece_texts(a.tokenizer)
        live = None
        if a.live:
            with open(a.live) as fh:
                live = json.load(fh)
    except (ValueError, OSError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    if a.time_bins < 1:
        p.error("--time-bins must be at least 1")
    figures = compute(trace, pieces, events, live, a.time_bins)
    text = report(figures, a.title)
    print(text)
    out_dir = a.out or os.path.dirname(os.path.abspath(a.trace))
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "study.md"), "w") as fh:
        fh.write(text + "\n")
    paths = routing_study_plots.write_plots(figures, out_dir, a.title, trace.n_experts)
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(figures, fh, indent=1)
    print("\nwrote " + ", ".join([os.path.join(out_dir, "study.md")] + list(paths.values())))
    return 0 if "live" not in figures or figures["live"]["all_equal"] else 2


if __name__ == "__main__":
    sys.exit(main())
