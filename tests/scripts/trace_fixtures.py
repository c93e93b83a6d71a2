"""What the routing-trace tests share (tests/scripts/routing_trace_test.py, expert_placement_test.py):
pass/fail accounting, an independent trace writer straight from the tables of
docs/routing-trace-format.md (struct and json, never the loader's dtype), a synthetic
continuous-batching trace, and analyze_routing.py as a user runs it.

init(SOURCE_DIR, WORK_DIR) first; write() puts files in WORK_DIR."""
import os
import random
import struct
import subprocess
import sys

WORK = None
ANALYZE = None
results = {"passed": 0, "failed": 0}


def init(src, work):
    global WORK, ANALYZE
    WORK, ANALYZE = work, os.path.join(src, "scripts", "analyze_routing.py")


def finish():
    """Prints the tally; the exit code."""
    print(f"{results['passed']} passed, {results['failed']} failed")
    return 1 if results["failed"] else 0



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


def run_analyze(*args):
    p = subprocess.run([sys.executable, ANALYZE, *args], capture_output=True, text=True, timeout=300)
    return p.returncode, p.stdout, p.stderr
