#!/usr/bin/env python3
"""Live expert re-placement on a real cluster (mpirun, coordinator + workers) with a router-skewed
model, so that placement matters:

- In the middle of 16 streaming clients (W=2, 5 slots per worker) a Rebalance moves experts and adds
  replicas: every client gets exactly the tokens it gets alone (moe-generate), the placement epoch
  advanced on the coordinator and in every worker's own report, GetModelInfo lists the replicas,
  and worker balancedness measured after beats the balancedness measured before.
- W=4 with periodic re-placement (--rebalance-interval-s) and the checkpoint taken away after
  start-up: the workers cannot load, the moves fail and say which rank and why, the old placement
  stays and generation goes on unchanged; with the checkpoint back the next periodic check moves
  the cluster by itself. A routing trace of the run, replayed under the placement that then ran
  (expert_placement.replay_worker_counts, what analyze_routing.py --placement prints), predicts
  exactly the per-worker load the telemetry measured after the switch, and the workers' own counts
  agree.
- W=2 holding INT4 experts (--quantize int4): the same mid-stream move, the moved experts quantized
  as they load, every client's tokens those of the single process at INT4.

usage: rebalance_test.py BIN_DIR SOURCE_DIR WORK_DIR PYTHON_STUBS_DIR
Prints "N passed, M failed" and exits non-zero on any failure.
"""
import dataclasses
import os
import shutil
import sys
import time

BIN, SRC, WORK, STUBS = sys.argv[1:5]
sys.path.insert(0, STUBS)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(SRC, "scripts"))
import grpc  # noqa: E402
import numpy as np  # noqa: E402
from moe.v1 import inference_pb2 as pb  # noqa: E402
from moe.v1 import telemetry_pb2 as tpb  # noqa: E402
from moe.v1 import admin_pb2_grpc as apbg  # noqa: E402
from moe.v1 import telemetry_pb2_grpc as tpbg  # noqa: E402
from harness import Harness, generate  # noqa: E402
from streams import Streams  # noqa: E402
import routing_trace as rt  # noqa: E402
import expert_placement as ep  # noqa: E402

PY = "/usr/bin/python3"
MODEL = os.path.join(WORK, "model")
h = Harness(BIN, SRC, WORK)
check, wait_for = h.check, h.wait_for


def mid_stream_rebalance():
    c = h.cluster(2, "--expert-slots", "5", "--telemetry-interval-ms", "100", model=MODEL)
    try:
        tel = tpbg.TelemetryStub(c.channel)
        admin = apbg.AdminStub(c.channel)
        streams = Streams(h, MODEL)
        streams.run_clients(c, "before re-placement")  # fills the load window
        before = tel.GetLoad(tpb.GetLoadRequest())
        dry = admin.Rebalance(tpb.RebalanceRequest(dry_run=True))
        check(not dry.applied and not dry.skipped and dry.predicted_balancedness > dry.balancedness_before
              and dry.moved_slots > 0 and dry.plan_json and tel.GetLoad(tpb.GetLoadRequest()).placement.epoch == 1,
              f"dry run: balancedness {dry.balancedness_before:.3f} -> {dry.predicted_balancedness:.3f} predicted, "
              f"{dry.moved_slots} slots, {dry.replicas} replicas; nothing moved")
        result = {}

        def rebalance():
            result["response"] = admin.Rebalance(tpb.RebalanceRequest(), timeout=60)

        # Streams long enough to outlast the move (planning, the workers' background loads, polls
        # every 20 ms, the switch) even where a decode step takes 0.4 ms: 24 tokens were not.
        switched, spans = Streams(h, MODEL, extra_tokens=200).run_clients(c, "re-placement mid-stream",
                                                                           during=rebalance)
        r = result.get("response")
        check(r is not None and r.applied and r.placement_epoch == 2 and r.rearrangement.ok
              and r.rearrangement.experts_loaded >= r.moved_slots > 0,
              f"Rebalance applied: epoch {r.placement_epoch}, {r.moved_slots} slots moved, {r.replicas} replicas, "
              f"{r.rearrangement.experts_loaded} experts loaded in {r.rearrangement.load_seconds:.3f} s, "
              f"switch {1e3 * r.rearrangement.switch_seconds:.2f} ms")
        in_flight = sum(1 for start, end in spans if start < switched < end)
        check(in_flight > 0, f"the switch happened while {in_flight} of 16 streams were running")
        s = wait_for(lambda: (lambda s: s if all(w.placement_epoch == 2 and w.alive for w in s.workers) else None)(
            tel.GetLoad(tpb.GetLoadRequest())), "every worker to report placement epoch 2")
        if s is not None:
            check(s.placement.epoch == 2 and s.placement.rearrangements == 1 and s.epoch == before.epoch + 1,
                  f"placement epoch 2 on the coordinator and on every worker ({[w.placement_epoch for w in s.workers]}); "
                  f"telemetry epoch {before.epoch} -> {s.epoch}")
            check(s.worker_imbalance.balancedness > before.worker_imbalance.balancedness,
                  f"worker balancedness measured {before.worker_imbalance.balancedness:.3f} before, "
                  f"{s.worker_imbalance.balancedness:.3f} after (predicted {r.predicted_balancedness:.3f})")
        # Whether the plan replicates depends on the loads of the moment it is made, and those on
        # the tokens generated so far (which differ with the CPU's numerics): the replicas the plan
        # made must show, whatever their number (placement_planner_test covers when it replicates).
        info = c.stub.GetModelInfo(pb.GetModelInfoRequest())
        replicated = sum(1 for layer in info.placement for e in layer.replicas if len(e.worker_rank) > 1)
        check(info.placement_epoch == 2 and replicated == r.replicas,
              f"GetModelInfo: placement epoch {info.placement_epoch}, {replicated} replicated experts, "
              f"the plan's {r.replicas}")
        view = h.run([os.path.join(BIN, "moe-cli"), "load", "--once", "--server", f"127.0.0.1:{c.port}"])
        check("placement epoch 2 | 1 re-placements, 0 failed | 5 slots per worker" in view
              and ("*" in view) == (r.replicas > 0),
              f"moe-cli load shows the placement epoch and the replicas ({r.replicas})")
        again = h.run([os.path.join(BIN, "moe-cli"), "rebalance", "--dry-run", "--server", f"127.0.0.1:{c.port}"])
        check("nothing to do" in again or "plan (dry run)" in again, f"moe-cli rebalance --dry-run: {again.strip()}")
    finally:
        check(c.stop() == 0, "W=2: SIGTERM: the job exits 0")


def quantized_rebalance():
    """INT4 experts (--quantize int4 on every rank) moved and replicated mid-stream: the workers
    quantize the experts they receive as they load them, and every client still gets what the
    single process gives at INT4."""
    c = h.cluster(2, "--expert-slots", "5", "--telemetry-interval-ms", "100", model=MODEL,
                  launch=("--quantize", "int4"))
    try:
        tel = tpbg.TelemetryStub(c.channel)
        admin = apbg.AdminStub(c.channel)
        streams = Streams(h, MODEL, extra_tokens=200, tool_args=("--quantize", "int4"))
        streams.run_clients(c, "INT4, before re-placement")
        result = {}

        def rebalance():
            result["response"] = admin.Rebalance(tpb.RebalanceRequest(), timeout=60)

        streams.run_clients(c, "INT4, re-placement mid-stream", during=rebalance)
        r = result.get("response")
        check(r is not None and r.applied and r.rearrangement.ok and r.rearrangement.experts_loaded > 0,
              f"INT4: Rebalance applied, {r.rearrangement.experts_loaded if r else 0} quantized experts loaded")
        info = c.stub.GetModelInfo(pb.GetModelInfoRequest())
        held = [w.held_as for w in info.ranks]
        check(info.quantize.startswith("experts=int4") and held[1:] == ["experts INT4", "experts INT4"],
              f"GetModelInfo: --quantize {info.quantize}; ranks hold {held}")
    finally:
        check(c.stop() == 0, "INT4 W=2: SIGTERM: the job exits 0")


def failed_then_periodic():
    model = os.path.join(WORK, "model-copy")
    shutil.copytree(MODEL, model, dirs_exist_ok=True)
    weights = os.path.join(model, "model.safetensors")
    trace_path = os.path.join(WORK, "periodic.trace")
    c = h.cluster(4, "--expert-slots", "3", "--telemetry-interval-ms", "100", "--rebalance-interval-s", "0.5",
                  "--routing-trace", trace_path, model=model)
    try:
        tel = tpbg.TelemetryStub(c.channel)
        admin = apbg.AdminStub(c.channel)
        aside = weights + ".aside"
        os.rename(weights, aside)  # the ranks have it mapped already; a new load cannot open it
        reference = Streams(h, MODEL).reference("A failing move", max_tokens=20)
        ids, _, _ = generate(c.stub, "A failing move", max_tokens=20)
        s = wait_for(lambda: (lambda s: s if s.placement.failed_rearrangements > 0 else None)(
            tel.GetLoad(tpb.GetLoadRequest())), "a periodic re-placement to fail")
        if s is not None:
            last = s.placement.last
            check(not last.ok and last.trigger == "interval" and "worker rank" in last.error
                  and "model.safetensors" in last.error and s.placement.epoch == 1,
                  f"periodic move failed, placement epoch stays 1: '{last.error}'")
        try:
            for _ in range(50):  # a periodic attempt may hold the cluster for a moment
                try:
                    admin.Rebalance(tpb.RebalanceRequest(force=True), timeout=30)
                    check(False, "Rebalance without the checkpoint: no error")
                    break
                except grpc.RpcError as e:
                    if e.code() != grpc.StatusCode.ABORTED:
                        check(e.code() == grpc.StatusCode.FAILED_PRECONDITION and "worker rank" in e.details(),
                              f"Rebalance without the checkpoint: {e.code().name} '{e.details()}'")
                        break
                    time.sleep(0.05)
        finally:
            os.rename(aside, weights)
        after, _, _ = generate(c.stub, "A failing move", max_tokens=20)
        check(ids == reference and after == reference, "generation before and after the failed moves equals the single process")
        # Back: the next periodic check moves the cluster by itself.
        generate(c.stub, "Load for the window", max_tokens=16)
        s = wait_for(lambda: (lambda s: s if s.placement.epoch == 2 else None)(tel.GetLoad(tpb.GetLoadRequest())),
                     "a periodic re-placement to succeed")
        if s is None:
            return
        check(s.placement.last.ok and s.placement.last.trigger == "interval" and s.placement.rearrangements == 1,
              f"periodic re-placement: epoch 2 after {s.placement.failed_rearrangements} failed tries")
        # The periodic check keeps running: the new window may well move the cluster again (epoch 3 or
        # later), so wait for whichever placement settles, with steps run under it and every worker's
        # report in. A move right after the last request leaves no step under it: generate again then.
        def settled(s):
            return s if s.placement.epoch >= 2 and s.steps > 0 and all(
                w.placement_epoch == s.placement.epoch and w.reported_tokens == w.routed_tokens
                for w in s.workers) else None
        s = None
        for i in range(8):
            generate(c.stub, f"After the switch {i}", max_tokens=12 + i % 4)
            if i < 3:
                continue
            deadline = time.time() + 5
            while s is None and time.time() < deadline:
                s = settled(tel.GetLoad(tpb.GetLoadRequest()))
                time.sleep(0.1)
            if s is not None:
                break
        check(s is not None, f"worker reports cover every step under the placement in force "
              f"(epoch {s.placement.epoch if s else '?'})")
    finally:
        check(c.stop() == 0, "W=4: SIGTERM: the job exits 0")
    if s is None:
        return
    # The placement that ran after the switch, and the trace's steps since then.
    trace = rt.load(trace_path)
    steps = np.unique(trace.records["step"])
    since = dataclasses.replace(trace, records=trace.records[trace.records["step"] > steps[-1] - s.steps])
    replicas = [[[] for _ in range(s.num_experts)] for _ in range(s.num_layers)]
    for l, layer in enumerate(s.placement.layers):
        for slot in layer.slots:
            replicas[l][slot.expert].append(slot.rank)
    placement = ep.parse_placement({"layers": replicas}, s.num_layers, s.num_experts)
    predicted = ep.replay_worker_counts(since, placement)
    measured = np.array([list(layer.worker_tokens) for layer in s.layers])
    check(np.array_equal(predicted, measured) and measured.sum() > 0,
          f"the trace replayed under the placement that ran predicts the measured worker load exactly "
          f"({predicted.sum(axis=0).tolist()} vs {measured.sum(axis=0).tolist()})")


def main():
    os.makedirs(WORK, exist_ok=True)
    # Skewed routing (Zipf-like preference for low experts, as the demo model's, but harsher).
    h.run([PY, os.path.join(SRC, "scripts/make_model.py"), "--out", MODEL, "--vocab", "32000", "--hidden", "64",
           "--intermediate", "96", "--layers", "2", "--heads", "4", "--kv-heads", "2", "--experts", "8",
           "--top-k", "2", "--max-pos", "1024", "--dtype", "bf16", "--seed", "12", "--router-skew", "3",
           "--tokenizer", os.path.join(SRC, "core/model/tokenizer/tokenizer.model")])
    mid_stream_rebalance()
    quantized_rebalance()
    failed_then_periodic()
    return h.finish()


if __name__ == "__main__":
    sys.exit(main())
