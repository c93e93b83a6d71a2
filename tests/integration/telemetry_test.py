#!/usr/bin/env python3
"""Load telemetry on a real cluster (mpirun, coordinator + 3 workers, a router-skewed model).

- GetLoad on a fresh server returns zeros (not errors), with every worker heard from.
- Requests one at a time: the server's per-(layer, expert) counts equal those of the
  single-process engine (moe-generate --routing-trace) for the same prompts, and every layer's
  counts sum to tokens x top-k.
- Then concurrent requests: the counts equal the routing trace's exactly; what each worker reports
  equals what the coordinator routed to it, per (layer, expert); the temporal locality computed by
  scripts/analyze_routing.py from the trace equals the server's, layer by layer.
- WatchLoad streams snapshots; moe-cli load shows the table.
- Debian's prometheus server scrapes /metrics on loopback and its HTTP API returns the expected
  series and values.
- A labelled request: its response's request id is its request_id in the trace (records with
  prefill flags and router entropies, events with its label); GetLoad counts it under its label
  and shows the window figures; moe-cli prints the id; a bad label is INVALID_ARGUMENT.
- ResetLoad zeroes everything, workers included; counting resumes with the next request.
- With replicated experts (a second cluster), the workers' counts still equal the coordinator's.

usage: telemetry_test.py BIN_DIR SOURCE_DIR WORK_DIR PYTHON_STUBS_DIR
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request

BIN, SRC, WORK, STUBS = sys.argv[1:5]
sys.path.insert(0, STUBS)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(SRC, "scripts"))
import grpc  # noqa: E402
import numpy as np  # noqa: E402
from moe.v1 import inference_pb2 as pb  # noqa: E402
from moe.v1 import telemetry_pb2 as tpb  # noqa: E402
from moe.v1 import telemetry_pb2_grpc as tpbg  # noqa: E402
from harness import Harness, generate  # noqa: E402
import expert_placement  # noqa: E402
import routing_trace  # noqa: E402

PY = "/usr/bin/python3"
MODEL = os.path.join(WORK, "model")
TRACE = os.path.join(WORK, "cluster.trace")
LAYERS, EXPERTS, TOP_K, WORKERS = 2, 8, 2, 3
h = Harness(BIN, SRC, WORK)
check, wait_for = h.check, h.wait_for

SEQUENTIAL = ["The history of the sea", "Mountains rise above", "A cat sat on the mat and then"]
CONCURRENT = [f"Client {i} asks about {topic}" for i, topic in enumerate(
    ["rivers", "the moon", "cities", "trees", "music", "rain", "bread", "stars"])]


def expert_matrix(snapshot):
    return np.array([list(layer.expert_tokens) for layer in snapshot.layers], dtype=np.int64)


def single_process_counts(prompt, max_tokens):
    path = os.path.join(WORK, "single.trace")
    h.run([os.path.join(BIN, "moe-generate"), "--model", MODEL, "--prompt", prompt, "--max-tokens",
           str(max_tokens), "--threads", "1", "--routing-trace", path])
    return routing_trace.expert_counts(routing_trace.load(path))


def workers_caught_up(telemetry):
    """The snapshot once every worker's report covers everything routed so far."""
    s = telemetry.GetLoad(tpb.GetLoadRequest())
    return s if all(w.reported_tokens == w.routed_tokens for w in s.workers) else None


def worker_matrix(snapshot):
    m = np.zeros((LAYERS, EXPERTS), dtype=np.int64)
    for w in snapshot.workers:
        for e in w.experts:
            m[e.layer, e.expert] += e.tokens
    return m


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prometheus_query(port, query):
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, never a proxy
    with opener.open(url, timeout=5) as r:
        body = json.load(r)
    return {tuple(sorted((k, v) for k, v in x["metric"].items() if k not in ("__name__", "instance", "job"))):
            float(x["value"][1]) for x in body["data"]["result"]}


def check_prometheus(metrics_port, snapshot, n_requests):
    prom = shutil.which("prometheus")
    if not check(prom is not None, "Debian's prometheus server is installed (scripts/install-deps.sh)"):
        return
    port = free_port()
    config = os.path.join(WORK, "prometheus.yml")
    with open(config, "w") as f:
        f.write("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: moe\n    static_configs:\n"
                f"      - targets: ['127.0.0.1:{metrics_port}']\n")
    tsdb = os.path.join(WORK, "tsdb")
    shutil.rmtree(tsdb, ignore_errors=True)
    log = open(os.path.join(WORK, "prometheus.log"), "w")
    proc = subprocess.Popen([prom, f"--config.file={config}", f"--storage.tsdb.path={tsdb}",
                             f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT,
                            env=dict(os.environ, no_proxy="127.0.0.1"))
    try:
        want = {(("expert", str(e)), ("layer", "0")): float(snapshot.layers[0].expert_tokens[e])
                for e in range(EXPERTS)}

        def scraped():
            try:
                got = prometheus_query(port, 'moe_expert_tokens_total{layer="0"}')
            except OSError:
                return None  # not up yet
            return got if got == want else None
        got = wait_for(scraped, "Prometheus to scrape moe_expert_tokens_total", timeout=60)
        check(got == want, f"Prometheus returns moe_expert_tokens_total for layer 0 as the server counts it "
                           f"({sorted(int(v) for v in want.values())})")
        all_up = {(("worker", str(r)),): 1.0 for r in range(1, WORKERS + 1)}
        up = wait_for(lambda: prometheus_query(port, "moe_worker_up") == all_up, "moe_worker_up for every worker")
        check(up, f"moe_worker_up is 1 for the {WORKERS} workers")
        total = prometheus_query(port, "sum(moe_requests_total)")
        check(total == {(): float(n_requests)}, f"sum(moe_requests_total) = {n_requests}: {total}")
        ttft = prometheus_query(port, "moe_time_to_first_token_seconds_count")
        check(ttft == {(): float(n_requests)}, f"the time-to-first-token histogram counted {n_requests} requests")
        steps = prometheus_query(port, "moe_steps_total")
        overlapped = prometheus_query(port, "moe_overlapped_steps_total")
        check(len(steps) == 1 and list(steps.values())[0] >= n_requests and len(overlapped) == 1
              and 0 <= list(overlapped.values())[0] <= list(steps.values())[0],
              f"moe_steps_total and moe_overlapped_steps_total (--overlap auto): {steps}, {overlapped}")
        bal = prometheus_query(port, 'moe_balancedness{scope="experts",layer="all"}')
        check(bal and abs(list(bal.values())[0] - snapshot.expert_imbalance.balancedness) < 1e-9,
              "moe_balancedness{scope=experts,layer=all} equals GetLoad's")
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def main():
    os.makedirs(WORK, exist_ok=True)
    h.make_model(MODEL, seed=5, layers=LAYERS, experts=EXPERTS, top_k=TOP_K, router_skew=2)
    metrics_port_file = os.path.join(WORK, "metrics-port")
    if os.path.exists(metrics_port_file):
        os.remove(metrics_port_file)
    c = h.cluster(WORKERS, "--routing-trace", TRACE, "--telemetry-interval-ms", "100", "--metrics-listen",
                  "127.0.0.1:0", "--metrics-port-file", metrics_port_file, "--max-watch-streams", "1",
                  "--min-watch-interval-ms", "100", model=MODEL)
    try:
        telemetry = tpbg.TelemetryStub(c.channel)
        fresh = telemetry.GetLoad(tpb.GetLoadRequest())
        check(fresh.steps == 0 and not expert_matrix(fresh).any() and fresh.num_workers == WORKERS
              and fresh.expert_imbalance.balancedness == 1.0, "GetLoad on a fresh server: zeros, not an error")
        heard = wait_for(lambda: all(w.alive for w in telemetry.GetLoad(tpb.GetLoadRequest()).workers),
                         "every worker's first report")
        check(heard, "every worker reports (heartbeat)")
        # The report service shares the public port: without the cluster's token it refuses.
        forged = tpb.WorkerReport(rank=1, sequence=2**63, experts=[tpb.ExpertLoad(layer=0, expert=0, tokens=10**9)])
        for token in (None, "0" * 32):
            try:
                tpbg.WorkerTelemetryStub(c.channel).StreamReports(
                    iter([forged]), metadata=[("x-moe-worker-token", token)] if token else None, timeout=10)
                refused = False
            except grpc.RpcError as e:
                refused = e.code() == grpc.StatusCode.PERMISSION_DENIED
            check(refused, f"a worker report {'with a wrong' if token else 'without the'} token: PERMISSION_DENIED")
        check(telemetry.GetLoad(tpb.GetLoadRequest()).workers[0].reported_tokens == 0,
              "the forged report changed nothing")

        # One request at a time: the batches are those of the single-process engine.
        expected = np.zeros((LAYERS, EXPERTS), dtype=np.int64)
        tokens = 0
        for i, prompt in enumerate(SEQUENTIAL):
            ids, _, last = generate(c.stub, prompt, max_tokens=12 + i)
            expected += single_process_counts(prompt, 12 + i)
            tokens += last.usage.prompt_tokens + last.usage.generated_tokens - 1  # the last is not fed
        s = telemetry.GetLoad(tpb.GetLoadRequest())
        got = expert_matrix(s)
        check(np.array_equal(got, expected),
              f"sequential requests: server counts equal the single-process engine's\n{got}\nvs\n{expected}")
        check(s.tokens == tokens and all(got.sum(axis=1) == tokens * TOP_K),
              f"every layer routed tokens x top-k = {tokens} x {TOP_K} token-choices")

        # Concurrent requests: batches mix sequences; the trace and the workers must still agree.
        threads = [threading.Thread(target=generate, args=(c.stub, p), kwargs=dict(max_tokens=10 + i))
                   for i, p in enumerate(CONCURRENT)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        s = wait_for(lambda: workers_caught_up(telemetry), "worker reports to cover every step")
        if s is None:
            return
        trace = routing_trace.load(TRACE)
        from_trace = routing_trace.expert_counts(trace)
        check(np.array_equal(expert_matrix(s), from_trace),
              f"telemetry counts equal the routing trace's ({len(trace.records)} tokens, {s.steps} steps)")
        check(np.array_equal(worker_matrix(s), from_trace),
              "worker-reported counts per (layer, expert) equal the coordinator's")
        check(all(w.reported_tokens == w.routed_tokens and w.exchanges > 0 for w in s.workers)
              and sum(w.reported_tokens for w in s.workers) == from_trace.sum(),
              "worker-reported totals equal what the coordinator routed: "
              + ", ".join(f"rank {w.rank} {w.reported_tokens}" for w in s.workers))
        check(s.expert_imbalance.balancedness < 0.8,
              f"the skewed router shows imbalance (balancedness {s.expert_imbalance.balancedness:.3f})")

        # Locality from the trace by the analysis script, against the server's.
        report = os.path.join(WORK, "analysis.json")
        h.run([PY, os.path.join(SRC, "scripts/analyze_routing.py"), TRACE, "--out", os.path.join(WORK, "plots"),
               "--json", report])
        analysis = json.load(open(report))
        same = True
        for layer, server in zip(analysis["locality"]["layers"], s.layers):
            mine = (layer["pairs"], layer["first_choice_repeats"], layer["set_overlaps"])
            theirs = (server.locality.pairs, server.locality.first_choice_repeats, server.locality.set_overlaps)
            same &= mine == theirs and abs(layer["set_overlap_ratio"] - server.locality.set_overlap_ratio) < 1e-12
            print(f"  layer {server.layer}: script {mine}, server {theirs}")
        check(same and s.locality.pairs > 0, "temporal locality from analyze_routing.py equals the server's, per layer")
        check(abs(analysis["locality"]["chance_set_overlap"] - s.locality.chance_set_overlap) < 1e-12,
              f"chance overlap {s.locality.chance_set_overlap:.4f} both ways")
        check(all(os.path.getsize(os.path.join(WORK, "plots", f)) > 0
                  for f in ("heatmap.png", "worker_load.png", "locality.png")), "the script wrote the three PNGs")

        # The live views.
        stream = telemetry.WatchLoad(tpb.WatchLoadRequest(interval_ms=10))  # raised to the 100 ms minimum
        first, second = next(stream), next(stream)
        check(second.uptime_seconds - first.uptime_seconds >= 0.09, "WatchLoad streams fresh snapshots, "
              f"no faster than --min-watch-interval-ms ({second.uptime_seconds - first.uptime_seconds:.3f} s apart)")
        try:
            next(telemetry.WatchLoad(tpb.WatchLoadRequest(interval_ms=100)))
            check(False, "a second WatchLoad beyond --max-watch-streams 1: no error")
        except grpc.RpcError as e:
            check(e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "--max-watch-streams" in e.details(),
                  f"a second WatchLoad beyond --max-watch-streams 1: {e.code().name}")
        stream.cancel()
        deadline = time.time() + 5
        while True:  # the slot frees once the server sees the cancellation
            try:
                next(telemetry.WatchLoad(tpb.WatchLoadRequest(interval_ms=100))).uptime_seconds
                check(True, "after the first stream ends, a new WatchLoad is served")
                break
            except grpc.RpcError:
                if time.time() > deadline:
                    check(False, "after the first stream ends, a new WatchLoad is served")
                    break
                time.sleep(0.1)
        def load_view():
            view = h.run([os.path.join(BIN, "moe-cli"), "load", "--once", "--server", f"127.0.0.1:{c.port}"])
            healthy = len([ln for ln in view.splitlines() if "s ago" in ln]) == WORKERS
            return view if "temporal locality" in view and healthy else None
        view = wait_for(load_view, "moe-cli load to show every worker")
        print(view)
        check(view, "moe-cli load --once shows the layers and every worker")

        check_prometheus(int(open(metrics_port_file).read()), s, len(SEQUENTIAL) + len(CONCURRENT))
        labelled(c, telemetry)

        # Reset: zeros everywhere, then counting resumes with the next request, workers included.
        epoch = telemetry.ResetLoad(tpb.ResetLoadRequest()).epoch
        z = telemetry.GetLoad(tpb.GetLoadRequest())
        check(z.epoch == epoch and z.steps == 0 and not expert_matrix(z).any() and z.locality.pairs == 0
              and all(w.reported_tokens == 0 and w.routed_tokens == 0 for w in z.workers),
              f"GetLoad after ResetLoad: zeros (epoch {epoch})")
        generate(c.stub, SEQUENTIAL[0], max_tokens=12)
        after = wait_for(lambda: workers_caught_up(telemetry), "worker reports after the reset")
        check(after is not None and np.array_equal(expert_matrix(after), single_process_counts(SEQUENTIAL[0], 12))
              and np.array_equal(worker_matrix(after), expert_matrix(after)),
              "after the reset the server and its workers count only the new request")
    finally:
        rc = c.stop()
    check(rc == 0, "SIGTERM: the cluster exits 0")


def labelled(c, telemetry):
    """A labelled request: every message carries its id, which is the request_id of its records in
    the trace (prompt rows flagged prefill, router entropies present) and of its events (label,
    sizes, end); GetLoad counts it under its label. moe-cli prints the id; a bad label is refused."""
    prompt = "A labelled request about the sea"
    req = pb.GenerateRequest(text=prompt.encode(), label="study:a-1", sampling=pb.SamplingParams(max_tokens=6))
    messages = list(c.stub.Generate(req))
    ids = {m.request_id for m in messages}
    check(len(ids) == 1 and min(ids) > len(SEQUENTIAL) + len(CONCURRENT),
          f"every message of a stream carries the same request id ({sorted(ids)})")
    rid, usage = ids.pop(), messages[-1].usage
    fed = usage.prompt_tokens + usage.generated_tokens - 1  # the last token is not fed back
    trace = routing_trace.load(TRACE)
    rows = trace.records[trace.records["request_id"] == rid]
    prefill = (rows["flags"] & routing_trace.PREFILL_FLAG) != 0
    check(trace.version == 2 and len(rows) == fed and int(prefill.sum()) == usage.prompt_tokens
          and rows["position"][prefill].tolist() == list(range(usage.prompt_tokens))
          and not prefill[rows["position"] >= usage.prompt_tokens].any(),
          f"the trace's records of request {rid}: {len(rows)} rows ({int(prefill.sum())} prefill), "
          f"expected {fed} ({usage.prompt_tokens} prompt)")
    entropy = rows["entropy"]
    check(np.isfinite(entropy).all() and (entropy >= 0).all() and (entropy <= np.log(EXPERTS) + 1e-5).all(),
          f"router entropies in [0, ln E] (mean {float(entropy.mean()):.3f} nats)")
    events = routing_trace.load_events(TRACE)
    seq = events["sequences"].get(rid, {})
    check(seq.get("label") == "study:a-1" and seq.get("prompt_tokens") == usage.prompt_tokens
          and seq.get("max_tokens") == 6 and seq.get("end_time") is not None
          and seq["time"] <= rows["time"].min() <= rows["time"].max() <= seq["end_time"],
          f"the events file names request {rid}, its label, sizes, arrival and end: {seq}")
    steps = events["steps"]
    check(not events["missing"] and len(steps) == len(np.unique(trace.records["step"]))
          and sum(st["rows"] for st in steps) == len(trace.records)
          and all(len(st["worker_compute_seconds"]) == len(st["worker_rows"]) == WORKERS for st in steps)
          and sum(sum(st["worker_rows"]) for st in steps) == len(trace.records) * LAYERS * TOP_K
          and all(st["exchange_seconds"] > 0 and st["straggler_seconds"] >= 0 for st in steps),
          f"one step event per step ({len(steps)}), rows and worker rows adding up to the trace's")
    s = telemetry.GetLoad(tpb.GetLoadRequest())
    mine = [l for l in s.labels if l.label == "study:a-1"]
    check(len(mine) == 1 and mine[0].requests == 1 and mine[0].prompt_tokens == usage.prompt_tokens
          and mine[0].generated_tokens == usage.generated_tokens - 1
          and sum(mine[0].expert_tokens) == fed * LAYERS * TOP_K
          and any(l.label == "" and l.requests >= len(SEQUENTIAL) + len(CONCURRENT) for l in s.labels),
          f"GetLoad counts the request under its label: {[(l.label, l.requests) for l in s.labels]}")
    # A step's exchanges and its routing may fall on either side of a bucket's edge: one step's worth.
    check(s.window.steps > 0 and s.window.tokens > 0 and abs(s.window.exchanges - s.window.steps * LAYERS) <= LAYERS,
          f"GetLoad's window: {s.window.steps} steps, {s.window.tokens} tokens, {s.window.exchanges} exchanges")
    p = subprocess.run([os.path.join(BIN, "moe-cli"), "generate", "--server", f"127.0.0.1:{c.port}", "--prompt",
                        "Hi", "--max-tokens", "2", "--label", "cli"], capture_output=True, text=True, timeout=60)
    check(p.returncode == 0 and f"request {rid + 1}," in p.stderr, f"moe-cli generate --label prints the id: {p.stderr.strip()}")
    try:
        list(c.stub.Generate(pb.GenerateRequest(text=b"x", label="no spaces", sampling=pb.SamplingParams(max_tokens=1))))
        check(False, "a bad label: no error")
    except grpc.RpcError as e:
        check(e.code() == grpc.StatusCode.INVALID_ARGUMENT and "label" in e.details(),
              f"a bad label: {e.code().name}: {e.details()}")


def streaming_gaps():
    """Tokens reach the client as each step ends, not in clumps: the gaps between a lone stream's
    messages at the client follow the server's step-to-step times for that request (its trace
    records' times), median against median, and almost none arrive back to back.

    On a cluster of its own, one worker and a model whose decode step takes about 2 ms: on 2 cores
    shared with 4 ranks, a client can fall behind 0.3 ms steps by itself and see clumps the server
    did not make. A server that delivered by polling (tokens queued for a poll interval of many
    steps) clumps at any step time. A descheduled client can still clump one stream, so up to
    three are tried."""
    model, trace_path = os.path.join(WORK, "stream-model"), os.path.join(WORK, "stream.trace")
    h.make_model(model, seed=6, hidden=512, intermediate=1024, layers=4, heads=8, experts=4)
    c = h.cluster(1, "--routing-trace", trace_path, model=model)
    try:
        attempts = []
        for _ in range(3):
            arrivals, rid = [], None
            req = pb.GenerateRequest(text=b"Streaming, one token at a time",
                                     sampling=pb.SamplingParams(max_tokens=96))
            for m in c.stub.Generate(req):
                if m.token_ids:
                    arrivals.append(time.perf_counter())
                    rid = m.request_id
            client = np.diff(np.array(arrivals)) * 1e3
            trace = routing_trace.load(trace_path)
            rows = trace.records[(trace.records["request_id"] == rid)
                                 & ((trace.records["flags"] & routing_trace.PREFILL_FLAG) == 0)]
            server = np.diff(np.sort(rows["time"])) * 1e3  # decode steps of this request, ms apart
            clumped = float((client < 0.1).mean()) if client.size else 1.0
            ok = (client.size >= 90 and server.size >= 90 and clumped < 0.25
                  and abs(float(np.median(client)) - float(np.median(server))) < max(1.0, 0.5 * float(np.median(server))))
            attempts.append(f"client gaps median {np.median(client):.2f} ms (p10 {np.percentile(client, 10):.2f}) vs "
                            f"the server's step-to-step {np.median(server):.2f} ms, {100 * clumped:.0f}% of gaps under "
                            "0.1 ms")
            if ok:
                break
        check(ok, f"streaming ({len(attempts)} stream{'s' if len(attempts) > 1 else ''}): {'; '.join(attempts)}")
    finally:
        c.stop()


def replicas(overlap):
    """With replicated experts, each worker counts the rows the split rule gave its replicas, the
    coordinator's per-worker counts (replaying the rule) agree, and so does the routing trace
    replayed under the placement. With --overlap on, a step's two micro-batches are planned apart,
    and every replay must plan them apart too."""
    spec = {"experts": [[1, 2, 3], [2, 3], 1, 2, 3, [3, 1], 1, 2]}
    placement = os.path.join(WORK, "replicas.json")
    with open(placement, "w") as f:
        json.dump(spec, f)
    trace_path = os.path.join(WORK, f"replicas-{overlap}.trace")
    name = f"replicas (--overlap {overlap})"
    c = h.cluster(WORKERS, "--placement", placement, "--telemetry-interval-ms", "100", "--overlap", overlap,
                  "--routing-trace", trace_path, model=MODEL)
    try:
        telemetry = tpbg.TelemetryStub(c.channel)
        threads = [threading.Thread(target=generate, args=(c.stub, p), kwargs=dict(max_tokens=10 + i))
                   for i, p in enumerate(CONCURRENT)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        s = wait_for(lambda: workers_caught_up(telemetry), f"{name}: worker reports to cover every step")
        if s is None:
            return
        check(np.array_equal(worker_matrix(s), expert_matrix(s)),
              f"{name}: the workers' counts per (layer, expert), summed over replicas, equal the coordinator's")
        check(all(w.reported_tokens == w.routed_tokens and w.exchanges > 0 for w in s.workers)
              and all(sum(layer.worker_tokens) == s.tokens * TOP_K for layer in s.layers),
              f"{name}: worker-reported totals equal what the coordinator dispatched: "
              + ", ".join(f"rank {w.rank} {w.reported_tokens}" for w in s.workers))
        on_ranks = {w.rank for w in s.workers for e in w.experts if e.layer == 0 and e.expert == 0 and e.tokens > 0}
        check(len(on_ranks) >= 2, f"{name}: expert 0's rows were split over its replicas' ranks ({sorted(on_ranks)})")
    finally:
        rc = c.stop()
    check(rc == 0, f"{name}: SIGTERM: the cluster exits 0")
    trace = routing_trace.load(trace_path)
    second = int(((trace.records["flags"] & routing_trace.MICRO_BATCH_FLAG) != 0).sum())
    check((second > 0) == (overlap == "on"), f"{name}: {second} records flagged as a step's second micro-batch")
    predicted = expert_placement.replay_worker_counts(
        trace, expert_placement.parse_placement(spec, trace.n_layers, trace.n_experts))
    measured = np.array([list(layer.worker_tokens) for layer in s.layers])
    check(np.array_equal(predicted, measured),
          f"{name}: the trace replayed under the placement predicts the measured worker load exactly "
          f"({predicted.sum(axis=0).tolist()} vs {measured.sum(axis=0).tolist()})")

if __name__ == "__main__":
    main()
    replicas("off")
    replicas("on")
    streaming_gaps()
    sys.exit(h.finish())
