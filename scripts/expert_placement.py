#!/usr/bin/env python3
"""Expert placements as the coordinator reads them (deploy/placement.example.json: one rank or a
list of replicas per expert, for every layer or per layer) and the runtime's split rule over
replicas, replayed on a routing trace: what a trace's worker load would have been under another
placement (core/placement/expert_placement.h and coordinator/inference/moe_routing.h are the C++ originals).

    import routing_trace as rt, expert_placement as ep
    t = rt.load("run.trace")
    p = ep.load_placement("p.json", t.n_layers, t.n_experts)   # replicas allowed
    ep.replay_worker_counts(t, p)     # int64 [L, W] under p, by the runtime's split rule

Only numpy is needed.
"""
import json
import os
from typing import NamedTuple

import numpy as np

from routing_trace import MAX_WORKERS, MICRO_BATCH_FLAG  # ranks as a trace stores them (i16)


class Placement(NamedTuple):
    replicas: list  # [L][E]: each expert's ranks (1..n_workers), one slot each, in listed order
    n_workers: int  # the highest rank named
    expert_slots: int  # the file's "expert_slots" (slots per worker per layer), 0 if absent


def placement_from_table(table, n_workers=None):
    """A one-rank-per-expert table [L][E] (a trace's own placement) as a Placement; n_workers
    defaults to the highest rank named."""
    replicas = [[[int(r)] for r in row] for row in np.asarray(table).tolist()]
    highest = max(r[0] for row in replicas for r in row)
    return Placement(replicas, n_workers or highest, 0)


def contiguous_placement(n_layers, n_experts, n_workers):
    """The coordinator's default (ExpertPlacement::Contiguous): worker 1 the first block of
    experts, ...; the first (E % W) workers get one more."""
    if not 1 <= n_workers <= n_experts:
        raise ValueError(f"contiguous placement: {n_workers} workers for {n_experts} experts")
    base, extra = divmod(n_experts, n_workers)
    row = [w + 1 for w in range(n_workers) for _ in range(base + (w < extra))]
    return placement_from_table([row] * n_layers)


def parse_placement(obj, n_layers, n_experts, name="placement"):
    """Validates a placement as JSON-decoded: {"experts": [...]} (every layer) or {"layers":
    [[...], ...]}, each entry a rank or a list of distinct ranks (its replicas), optional
    "expert_slots": S (no rank hosts more than S slots of a layer). ValueError on anything else."""
    if not isinstance(obj, dict):
        raise ValueError(f"{name}: not a JSON object")
    if "experts" in obj:
        rows = [obj["experts"]] * n_layers
    elif "layers" in obj:
        rows = obj["layers"]
        if not isinstance(rows, list) or len(rows) != n_layers:
            raise ValueError(f"{name}: \"layers\" must hold {n_layers} tables, one per layer")
    else:
        raise ValueError(f"{name}: expected an \"experts\" or a \"layers\" field")
    slots = obj.get("expert_slots", 0)
    if not isinstance(slots, int) or isinstance(slots, bool) or slots < 0:
        raise ValueError(f"{name}: \"expert_slots\" must be a positive integer")

    def is_rank(x):
        return isinstance(x, int) and not isinstance(x, bool) and 1 <= x <= MAX_WORKERS

    replicas = []
    for layer, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != n_experts:
            raise ValueError(f"{name}: layer {layer} must list {n_experts} entries, one per expert")
        out = []
        for e, entry in enumerate(row):
            ranks = entry if isinstance(entry, list) else [entry]
            if not ranks or not all(is_rank(r) for r in ranks) or len(set(ranks)) != len(ranks):
                raise ValueError(f"{name}: layer {layer} expert {e}: expected a worker rank or a list "
                                 f"of distinct ranks, got {json.dumps(entry)}")
            out.append(list(ranks))
        if slots:
            hosted = np.bincount([r for ranks in out for r in ranks])
            if hosted.max() > slots:
                raise ValueError(f"{name}: layer {layer}: rank {int(hosted.argmax())} hosts "
                                 f"{int(hosted.max())} slots, above expert_slots {slots}")
        replicas.append(out)
    n_workers = max(r for row in replicas for ranks in row for r in ranks)
    return Placement(replicas, n_workers, slots)


def load_placement(path, n_layers, n_experts):
    """Reads a placement file (see parse_placement). ValueError / OSError name the file."""
    path = os.fspath(path)
    with open(path) as f:
        try:
            obj = json.load(f)
        except ValueError as e:
            raise ValueError(f"{path}: not JSON ({e})") from None
    return parse_placement(obj, n_layers, n_experts, name=path)


def step_groups(trace):
    """int64 [N]: each record's dispatch group as 0, 1, 2, ... in file order: a step, or each of a
    step's two micro-batches, whose dispatches were planned apart. Records of one step are written
    together, so a group is a run of equal step numbers and micro-batch flags (a step number seen
    again later, a tool's second run, is a new step)."""
    step = trace.records["step"]
    if len(step) == 0:
        return np.zeros(0, dtype=np.int64)
    second = (trace.records["flags"] & MICRO_BATCH_FLAG) != 0
    change = (step[1:] != step[:-1]) | (second[1:] != second[:-1])
    return np.cumsum(np.r_[True, change]).astype(np.int64) - 1


def _water_fill(loads, n):
    """The split rule for one expert over all steps at once. loads: int64 [S, r], its replicas'
    ranks' loads so far; n: int64 [S], its choices in each step. Giving the choices one at a time
    to the least-loaded replica (ties to the first listed) raises every replica below a level h
    to h, where h is the highest level those units can reach, then gives the rest, one each, to
    the first-listed replicas at h. Returns the new loads [S, r]."""
    lo = loads.min(axis=1)  # nothing needed to reach it
    hi = lo + n + 1  # beyond reach: raising the lowest replica alone costs n + 1
    while True:
        active = hi - lo > 1
        if not active.any():
            break
        mid = (lo + hi) // 2
        ok = np.maximum(mid[:, None] - loads, 0).sum(axis=1) <= n
        lo = np.where(active & ok, mid, lo)
        hi = np.where(active & ~ok, mid, hi)
    rest = n - np.maximum(lo[:, None] - loads, 0).sum(axis=1)  # fewer than the replicas at lo
    at_level = loads <= lo[:, None]
    extra = at_level & (np.cumsum(at_level, axis=1) <= rest[:, None])
    return np.where(at_level, lo[:, None] + extra, loads)


def replay_worker_counts(trace, placement):
    """int64 [L, W]: token-choices per (layer, worker) if the trace had run under `placement`
    (a Placement), by the runtime's split rule, per layer and step: every choice of a
    non-replicated expert goes to its only slot; then each replicated expert in expert order gives
    its choices, one at a time, to the replica whose rank has the least load so far in this
    step and layer (ties to the first listed). Choices are alike, so only their number per step
    matters: non-replicated experts are one bincount, replicated ones a water-filling per step."""
    L, E, k, W = trace.n_layers, trace.n_experts, trace.top_k, placement.n_workers
    if len(placement.replicas) != L or any(len(row) != E for row in placement.replicas):
        raise ValueError(f"placement is not {L} layers x {E} experts")
    out = np.zeros((L, W), dtype=np.int64)
    if len(trace.records) == 0:
        return out
    group = step_groups(trace)
    n_steps = int(group[-1]) + 1
    per_choice = np.repeat(group, k) * E
    for layer in range(L):
        row = placement.replicas[layer]
        choices = trace.records["experts"][:, layer, :].ravel().astype(np.int64)
        counts = np.bincount(per_choice + choices, minlength=n_steps * E).reshape(n_steps, E)
        only = np.zeros((E, W), dtype=np.int64)  # expert -> its rank, non-replicated ones
        for e, ranks in enumerate(row):
            if len(ranks) == 1:
                only[e, ranks[0] - 1] = 1
        load = counts @ only  # [steps, W]
        for e, ranks in enumerate(row):
            if len(ranks) > 1:
                cols = np.array(ranks) - 1
                load[:, cols] = _water_fill(load[:, cols], counts[:, e])
        out[layer] = load.sum(axis=0)
    return out
