#!/usr/bin/env python3
"""Loader and pure analysis functions for routing traces (docs/routing-trace-format.md, versions
1 and 2) and their events files.

    import routing_trace as rt
    t = rt.load("run.trace")          # ValueError with a one-line message on a bad file
    t.records["flags"], t.records["entropy"]   # prefill bit; router entropy [N, L] (NaN in v1)
    ev = rt.load_events("run.trace")  # run.trace.events.jsonl: sequences (labels) and steps
    rt.expert_counts(t)               # int64 [L, E]
    rt.worker_counts(t)               # int64 [L, W]
    rt.layer_imbalance(rt.expert_counts(t)), rt.overall_imbalance(...), rt.locality(t)

Placements, and a trace's load replayed under another one, are in expert_placement.py.

Only numpy is needed. Records are read in one go with a structured dtype (explicit offsets,
itemsize = record_bytes), never with a Python loop, so traces of millions of tokens load fast.
"""
import json
import math
import os
import struct
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

MAGIC = b"MOETRACE"
VERSION = 2  # what the writer writes; load() reads every version in SUPPORTED_VERSIONS
SUPPORTED_VERSIONS = (1, 2)
PREFILL_FLAG = 1  # records["flags"] bit 0: a prompt token, not a sampled one
MICRO_BATCH_FLAG = 2  # bit 1: the step's second micro-batch (planned apart from the first)
FIXED_HEADER_BYTES = 64
RECORD_FIXED_BYTES = 32
MAX_EXPERTS = 255  # experts are stored as u8
MAX_WORKERS = 32767  # placement is stored as i16

# magic, version, header_bytes, record_bytes, L, E, k, W, reserved, start time, 16 reserved bytes
_HEADER = struct.Struct("<8s8Id16x")
assert _HEADER.size == FIXED_HEADER_BYTES


def _round_up(n, multiple):
    return (n + multiple - 1) // multiple * multiple


def header_size(n_layers, n_experts):
    """header_bytes (every version): 64 + 2*L*E rounded up to 8."""
    return _round_up(FIXED_HEADER_BYTES + 2 * n_layers * n_experts, 8)


def weights_offset(n_layers, top_k):
    """Offset of the f32 weights in a record: 32 + L*k rounded up to 4."""
    return RECORD_FIXED_BYTES + _round_up(n_layers * top_k, 4)


def entropy_offset(n_layers, top_k):
    """Offset of the f32 router entropies in a version-2 record: right after the weights."""
    return weights_offset(n_layers, top_k) + 4 * n_layers * top_k


def record_size(n_layers, top_k, version=VERSION):
    """record_bytes: 32 + A + 4*L*k (+ 4*L in version 2) rounded up to 8."""
    extra = 4 * n_layers if version >= 2 else 0
    return _round_up(entropy_offset(n_layers, top_k) + extra, 8)


def record_dtype(n_layers, top_k, version=VERSION):
    """The structured dtype of one record as stored, byte for byte as in the spec. Version 2 only
    has the fields flags (u1) and entropy (f4 [L]); load() gives every trace the version-2 dtype."""
    lk = (n_layers, top_k)
    names = ["request_id", "time", "step", "position", "token_id", "experts", "weights"]
    formats = ["<u8", "<f8", "<u4", "<i4", "<i4", ("u1", lk), ("<f4", lk)]
    offsets = [0, 8, 16, 20, 24, RECORD_FIXED_BYTES, weights_offset(n_layers, top_k)]
    if version >= 2:
        names += ["flags", "entropy"]
        formats += ["u1", ("<f4", (n_layers,))]
        offsets += [28, entropy_offset(n_layers, top_k)]
    return np.dtype({"names": names, "formats": formats, "offsets": offsets,
                     "itemsize": record_size(n_layers, top_k, version)})


@dataclass(frozen=True, eq=False)  # eq would compare numpy arrays
class Trace:
    path: str
    version: int  # as stored (1 or 2); records always have the version-2 fields
    n_layers: int
    n_experts: int
    top_k: int
    n_workers: int
    start_time: float  # Unix seconds; record times are relative to it
    header_bytes: int
    record_bytes: int
    placement: np.ndarray  # int16 [L, E]: worker rank 1..W hosting (layer, expert); 0 if W == 0
    records: np.ndarray  # structured [N], record_dtype(L, k, version 2) whatever the file's version
    dropped_bytes: int  # bytes of a trailing partial record (a writer cut short), not loaded


# ----------------------------------------------------------------------------------------------
# Loading and validation


def _parse_header(path, raw):
    """Checks the fixed 64-byte header; returns its fields as a dict."""
    (magic, version, header_bytes, record_bytes, n_layers, n_experts, top_k, n_workers, _,
     start_time) = _HEADER.unpack(raw)
    if magic != MAGIC:
        raise ValueError(f"{path}: not a routing trace (magic {magic!r}, expected {MAGIC!r})")
    if version not in SUPPORTED_VERSIONS:
        raise ValueError(f"{path}: routing trace version {version} is not supported "
                         f"(this loader reads versions {SUPPORTED_VERSIONS[0]} to {SUPPORTED_VERSIONS[-1]})")
    if n_layers < 1:
        raise ValueError(f"{path}: bad header: n_layers is 0")
    if not 1 <= n_experts <= MAX_EXPERTS:
        raise ValueError(f"{path}: bad header: n_experts {n_experts} is not in 1..{MAX_EXPERTS}")
    if not 1 <= top_k <= n_experts:
        raise ValueError(f"{path}: bad header: top_k {top_k} is not in 1..n_experts ({n_experts})")
    if n_workers > MAX_WORKERS:
        raise ValueError(f"{path}: bad header: n_workers {n_workers} is above {MAX_WORKERS}")
    # The version fixes both sizes; a mismatch means a corrupt file or a writer that disagrees
    # with the spec, and reading on would produce garbage rather than an error.
    want_header = header_size(n_layers, n_experts)
    if header_bytes != want_header:
        raise ValueError(f"{path}: bad header: header_bytes is {header_bytes}, expected {want_header} "
                         f"for {n_layers} layers x {n_experts} experts")
    want_record = record_size(n_layers, top_k, version)
    if record_bytes != want_record:
        raise ValueError(f"{path}: bad header: record_bytes is {record_bytes}, expected {want_record} "
                         f"for {n_layers} layers x top-{top_k}")
    if not math.isfinite(start_time):
        raise ValueError(f"{path}: bad header: start time is {start_time}")
    return dict(version=version, header_bytes=header_bytes, record_bytes=record_bytes,
                n_layers=n_layers, n_experts=n_experts, top_k=top_k, n_workers=n_workers,
                start_time=start_time)


def _check_placement(path, placement, n_workers):
    if n_workers == 0:
        if placement.any():
            raise ValueError(f"{path}: bad placement: n_workers is 0 but placement names workers")
        return
    lo, hi = int(placement.min()), int(placement.max())
    if lo < 1 or hi > n_workers:
        raise ValueError(f"{path}: bad placement: worker ranks {lo}..{hi} outside 1..{n_workers}")


def _first_bad(mask):
    return int(np.argmax(mask.reshape(len(mask), -1).any(axis=1)))


def _check_records(path, records, n_experts):
    if len(records) == 0:
        return
    experts = records["experts"]
    if int(experts.max()) >= n_experts:
        bad = _first_bad(experts >= n_experts)
        raise ValueError(f"{path}: record {bad}: expert id {int(experts[bad].max())} out of range "
                         f"for {n_experts} experts")
    finite = np.isfinite(records["time"])
    if not finite.all():
        raise ValueError(f"{path}: record {_first_bad(~finite)}: time is not a finite number")


def _as_version_2(records, n_layers, top_k):
    """Version-1 records in the version-2 dtype: flags 0 (the reserved bytes), entropy NaN (not
    recorded). One copy, field by field: the layouts differ only in the record's tail."""
    out = np.zeros(len(records), dtype=record_dtype(n_layers, top_k, 2))
    for name in records.dtype.names:
        out[name] = records[name]
    out["entropy"] = np.nan
    return out


def load(path):
    """Reads a routing trace. Raises ValueError (one line, naming the file) on a malformed file
    and OSError if it cannot be read. A trailing partial record is dropped (see dropped_bytes)."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < FIXED_HEADER_BYTES:
            raise ValueError(f"{path}: not a routing trace: {size} bytes, "
                             f"shorter than the {FIXED_HEADER_BYTES}-byte header")
        h = _parse_header(path, f.read(FIXED_HEADER_BYTES))
        if size < h["header_bytes"]:
            raise ValueError(f"{path}: truncated header: {size} bytes, the header with its "
                             f"placement table needs {h['header_bytes']}")
        n_cells = h["n_layers"] * h["n_experts"]
        placement = np.frombuffer(f.read(2 * n_cells), dtype="<i2").astype(np.int16)
    placement = placement.reshape(h["n_layers"], h["n_experts"])
    _check_placement(path, placement, h["n_workers"])

    body = size - h["header_bytes"]
    n_records, dropped = divmod(body, h["record_bytes"])
    dtype = record_dtype(h["n_layers"], h["top_k"], h["version"])
    records = np.fromfile(path, dtype=dtype, count=n_records, offset=h["header_bytes"])
    if len(records) != n_records:  # the file shrank under us
        raise ValueError(f"{path}: read {len(records)} records, expected {n_records}")
    if h["version"] < 2:
        records = _as_version_2(records, h["n_layers"], h["top_k"])
    _check_records(path, records, h["n_experts"])
    return Trace(path=path, placement=placement, records=records, dropped_bytes=dropped, **h)


# ----------------------------------------------------------------------------------------------
# The events file: sequences (labels, sizes, arrival and end) and per-step exchange figures


def events_path(trace_path):
    """Where the writer puts a trace's events: TRACE.events.jsonl."""
    return os.fspath(trace_path) + ".events.jsonl"


def load_events(trace_path):
    """Reads TRACE.events.jsonl (the writer's one JSON object per line). Returns a dict:
      path: the events file
      missing: True when there is no events file (a version-1 trace); everything else is empty
      dropped_partial_line: True when the last line was cut short (a writer stopped mid-line)
      sequences: {request_id: dict(label, prompt_tokens, max_tokens, time, end_time)}, times in
                 the records' clock (seconds since the trace's start); end_time None while running.
                 A request id started again (a tool's second run) keeps its latest start.
      steps: the step events in file order, as dicts (step, time, rows, prefill_rows,
             exchange_seconds, worker_compute_seconds [W], worker_rows [W], straggler_seconds)
    ValueError (one line, naming the file and line) for a malformed line that is not the last."""
    path = events_path(trace_path)
    out = dict(path=path, missing=False, dropped_partial_line=False, sequences={}, steps=[])
    try:
        with open(path, "rb") as f:
            lines = f.read().split(b"\n")
    except FileNotFoundError:
        out["missing"] = True
        return out
    if lines and lines[-1] == b"":
        lines.pop()  # the final newline
    elif lines:
        # The writer ends every line with a newline: without it the last one was cut short.
        lines.pop()
        out["dropped_partial_line"] = True
    sequences = out["sequences"]
    for number, raw in enumerate(lines, start=1):
        try:
            event = json.loads(raw)
            kind = event["event"]
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path}: line {number} is not an event ({e})") from None
        if kind == "sequence":
            sequences[event["request_id"]] = dict(
                label=event["label"], prompt_tokens=event["prompt_tokens"],
                max_tokens=event["max_tokens"], time=event["time"], end_time=None)
        elif kind == "sequence_end":
            if event["request_id"] in sequences:
                sequences[event["request_id"]]["end_time"] = event["time"]
        elif kind == "step":
            out["steps"].append({k: v for k, v in event.items() if k != "event"})
        # Other kinds (a later writer's) are skipped.
    return out


def record_labels(trace, events):
    """The label of every record (str array [N]), through the events' sequences; records of a
    request the events do not name get ""."""
    req = trace.records["request_id"]
    ids, inverse = np.unique(req, return_inverse=True)
    labels = np.array([events["sequences"].get(int(i), {}).get("label", "") for i in ids] or [""],
                      dtype=object)
    return labels[inverse] if len(req) else np.zeros(0, dtype=object)


# ----------------------------------------------------------------------------------------------
# Load counts


def expert_counts(trace):
    """int64 [L, E]: token-choices per (layer, expert); each record adds its k choices per layer."""
    experts = trace.records["experts"]  # [N, L, k]
    out = np.zeros((trace.n_layers, trace.n_experts), dtype=np.int64)
    for layer in range(trace.n_layers):
        out[layer] = np.bincount(experts[:, layer, :].ravel(), minlength=trace.n_experts)
    return out


def experts_to_workers(counts, placement, n_workers):
    """Folds per-expert counts [L, E] into per-worker counts [L, W] through the placement
    (worker rank r is column r-1). n_workers == 0 gives [L, 0]."""
    counts = np.asarray(counts, dtype=np.int64)
    n_layers = counts.shape[0]
    out = np.zeros((n_layers, n_workers), dtype=np.int64)
    if n_workers == 0:
        return out
    rows = np.repeat(np.arange(n_layers), counts.shape[1])
    np.add.at(out, (rows, placement.astype(np.int64).ravel() - 1), counts.ravel())
    return out


def worker_counts(trace):
    """int64 [L, W]: token-choices per (layer, worker) under the trace's placement."""
    return experts_to_workers(expert_counts(trace), trace.placement, trace.n_workers)


class BucketedLoad(NamedTuple):
    window_steps: int
    first_step: np.ndarray  # int64 [B]: first step number of each bucket that has records
    end_time: np.ndarray  # float64 [B]: latest record time in the bucket, seconds from start
    choices: np.ndarray  # int64 [B]: all token-choices in the bucket (records * L * k)
    workers: np.ndarray  # int64 [B, W]: token-choices per worker, summed over layers


def bucketed_worker_load(trace, window_steps):
    """Per-worker token-choices in windows of window_steps forward steps ((step-1) // window).
    Only buckets that hold records are returned, in step order."""
    if window_steps < 1:
        raise ValueError("window_steps must be at least 1")
    rec = trace.records
    bucket = (rec["step"].astype(np.int64) - 1) // window_steps
    ids, dense = np.unique(bucket, return_inverse=True)
    n_buckets, n_workers = len(ids), trace.n_workers
    # Latest time per bucket: sort records by bucket, then one reduceat over the group starts.
    order = np.argsort(dense, kind="stable")
    starts = np.searchsorted(dense[order], np.arange(n_buckets))
    end_time = (np.maximum.reduceat(rec["time"][order], starts) if n_buckets
                else np.zeros(0, dtype=np.float64))
    per_record = trace.n_layers * trace.top_k
    choices = np.bincount(dense, minlength=n_buckets).astype(np.int64) * per_record
    workers = np.zeros(n_buckets * n_workers, dtype=np.int64)
    if n_workers:
        rank = trace.placement.astype(np.int64)  # [L, E]
        for layer in range(trace.n_layers):
            worker = rank[layer][rec["experts"][:, layer, :]] - 1  # [N, k]
            flat = (dense[:, None] * n_workers + worker).ravel()
            workers += np.bincount(flat, minlength=n_buckets * n_workers)
    return BucketedLoad(window_steps, ids * window_steps + 1, end_time, choices,
                        workers.reshape(n_buckets, n_workers))


def timed_worker_load(trace, n_bins):
    """Token-choices in total and per worker in n_bins equal bins of wall-clock time (record
    times, first to last): load against time, where bins of steps would follow batch sizes.
    Returns (edges [n_bins + 1] seconds, choices [n_bins], workers [n_bins, W])."""
    if n_bins < 1:
        raise ValueError("n_bins must be at least 1")
    rec = trace.records
    t = rec["time"].astype(np.float64)
    lo = float(t.min()) if len(t) else 0.0
    hi = float(t.max()) if len(t) else 0.0
    edges = np.linspace(lo, hi if hi > lo else lo + 1e-3, n_bins + 1)
    b = np.clip(np.searchsorted(edges, t, side="right") - 1, 0, n_bins - 1)
    choices = np.bincount(b, minlength=n_bins).astype(np.int64) * trace.n_layers * trace.top_k
    n_workers = trace.n_workers
    workers = np.zeros(n_bins * n_workers, dtype=np.int64)
    if n_workers:
        rank = trace.placement.astype(np.int64)
        for layer in range(trace.n_layers):
            worker = rank[layer][rec["experts"][:, layer, :]] - 1  # [N, k]
            workers += np.bincount((b[:, None] * n_workers + worker).ravel(), minlength=n_bins * n_workers)
    return edges, choices, workers.reshape(n_bins, n_workers)


# ----------------------------------------------------------------------------------------------
# Imbalance


def _imbalance_dict(mean, peak, cv):
    if peak == 0:  # nothing routed: perfectly balanced by convention
        return dict(mean=0.0, max=0.0, balancedness=1.0, imbalance_ratio=0.0, cv=0.0)
    return dict(mean=float(mean), max=float(peak), balancedness=float(mean / peak),
                imbalance_ratio=float((peak - mean) / mean), cv=float(cv))


def imbalance(x):
    """Load imbalance of one non-negative vector: mean, max, balancedness = mean/max,
    imbalance_ratio = (max-mean)/mean, cv = population std / mean. All-zero gives 1, 0, 0."""
    x = np.asarray(x, dtype=np.float64).ravel()
    if x.size == 0:
        raise ValueError("imbalance of an empty vector")
    mean = x.mean()
    return _imbalance_dict(mean, x.max(), x.std() / mean if mean else 0.0)


def layer_imbalance(m):
    """imbalance() of every row of an [L, N] matrix, as a list of L dicts."""
    return [imbalance(row) for row in np.asarray(m)]


def overall_imbalance(m):
    """Imbalance over all layers of an [L, N] matrix: mean = sum_l mean_l, max = sum_l max_l
    (every layer waits for its busiest column, so the maxima add up), balancedness = mean/max,
    imbalance_ratio = (max-mean)/mean, cv = cv of the layer-summed vector (sum over layers)."""
    m = np.asarray(m, dtype=np.float64)
    if m.ndim != 2 or m.shape[1] == 0:
        raise ValueError("overall_imbalance needs an [L, N] matrix with N > 0")
    mean, peak = m.mean(axis=1).sum(), m.max(axis=1).sum()
    total = m.sum(axis=0)
    cv = total.std() / total.mean() if total.mean() else 0.0
    return _imbalance_dict(mean, peak, cv)


# ----------------------------------------------------------------------------------------------
# Temporal locality


def chance_set_overlap(n_experts, top_k):
    """Probability that two independent uniform k-subsets of E experts share an expert:
    1 - C(E-k, k) / C(E, k) (math.comb gives 0 when E-k < k, so the overlap is certain)."""
    return 1.0 - math.comb(n_experts - top_k, top_k) / math.comb(n_experts, top_k)


def _run_rank(same_as_previous):
    """For a sorted sequence, given 'element i+1 has the same key as element i' (length n-1),
    returns each element's index within its run of equal keys (0, 1, 2, ...)."""
    n = len(same_as_previous) + 1
    idx = np.arange(n)
    run_start = np.maximum.accumulate(np.where(np.r_[True, ~same_as_previous], idx, 0))
    return idx - run_start


def consecutive_pairs(trace):
    """Record index pairs (a, b): the same request_id, positions p and p+1. Returns two int64
    arrays. A (request, position) seen more than once (a tool running the same sequence twice)
    is paired by occurrence: the i-th record at p with the i-th record at p+1, file order."""
    rec = trace.records
    req, pos = rec["request_id"], rec["position"].astype(np.int64)
    order = np.lexsort((pos, req))  # stable: equal keys stay in file order
    req_s, pos_s = req[order], pos[order]
    rank = np.zeros(len(order), dtype=np.int64)
    if len(order) > 1:
        same = (req_s[1:] == req_s[:-1]) & (pos_s[1:] == pos_s[:-1])
        if same.any():
            # Put each occurrence rank in its own lane: sort by (request, rank, position).
            rank = _run_rank(same)
            lanes = np.lexsort((pos_s, rank, req_s))
            order, req_s, pos_s, rank = order[lanes], req_s[lanes], pos_s[lanes], rank[lanes]
    is_pair = ((req_s[1:] == req_s[:-1]) & (rank[1:] == rank[:-1]) & (pos_s[1:] == pos_s[:-1] + 1))
    return order[:-1][is_pair].astype(np.int64), order[1:][is_pair].astype(np.int64)


def _ratio(count, pairs):
    return count / pairs if pairs else None


def _locality_entry(pairs, repeats, overlaps):
    return dict(pairs=int(pairs), first_choice_repeats=int(repeats), set_overlaps=int(overlaps),
                first_choice_ratio=_ratio(repeats, pairs), set_overlap_ratio=_ratio(overlaps, pairs))


def locality(trace):
    """Temporal locality of routing between consecutive tokens of a request.

    Returns a dict:
      pairs: number of consecutive-token pairs (see consecutive_pairs)
      layers: list of L dicts {layer, pairs, first_choice_repeats, set_overlaps,
              first_choice_ratio, set_overlap_ratio} (ratios None when there are no pairs)
      total: the same summed over layers (pairs = pairs * L)
      chance_first_choice: 1/E; chance_set_overlap: see chance_set_overlap()
    first choice = experts[l, 0] equal in both tokens; set overlap = the k-sets intersect."""
    a, b = consecutive_pairs(trace)
    # One gather of all layers into contiguous [P, L, k] arrays: gathering per layer from the
    # strided records is several times slower on large traces.
    experts = trace.records["experts"]
    ea_all, eb_all = experts[a], experts[b]
    k, n_pairs = trace.top_k, len(a)
    layers = []
    for layer in range(trace.n_layers):
        ea, eb = ea_all[:, layer], eb_all[:, layer]  # [P, k] each
        overlap = np.zeros(n_pairs, dtype=bool)
        for i in range(k):
            for j in range(k):
                overlap |= ea[:, i] == eb[:, j]
        repeats = np.count_nonzero(ea[:, 0] == eb[:, 0])
        layers.append(dict(layer=layer, **_locality_entry(n_pairs, repeats,
                                                          np.count_nonzero(overlap))))
    total = _locality_entry(n_pairs * trace.n_layers,
                            sum(d["first_choice_repeats"] for d in layers),
                            sum(d["set_overlaps"] for d in layers))
    return dict(pairs=n_pairs, layers=layers, total=total,
                chance_first_choice=1.0 / trace.n_experts,
                chance_set_overlap=chance_set_overlap(trace.n_experts, k))
