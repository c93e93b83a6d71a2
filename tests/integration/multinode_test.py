"""The cluster across hosts: a coordinator host and two worker hosts in network namespaces
(tests/integration/netns.py), launched by mpirun from a hostfile like a user's through an rsh
agent, Open MPI's TCP transport between them, the gRPC port and the workers' telemetry on the
test network's addresses:

- logits equal the single process's (prefill and incremental);
- over TLS, 16 concurrent gRPC clients get exactly their single-process tokens; the workers'
  telemetry reaches the coordinator over the network, pinned to its certificate (every routed
  token reported); a live re-placement in the middle of 16 streams leaves every stream's tokens
  unchanged;
- the exchange under a bandwidth cap (tc tbf on the coordinator host's link): the transfer time per
  layer beside what the bytes and the rate predict; added latency (tc netem) where the kernel has
  netem, a visible SKIP line where it does not;
- a worker host's link cut mid-stream: every client gets UNAVAILABLE naming the rank within the
  bound, the job ends, and nothing is left running on any host.

Skipped (exit 77, with the reason) only where the machine forbids network namespaces.
usage: multinode_test.py BIN_DIR SOURCE_DIR WORK_DIR PYTHON_STUBS_DIR
"""
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time

BIN, SRC, WORK, STUBS = sys.argv[1:5]
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import netns  # noqa: E402

IN_NAMESPACE = os.environ.get("MOE_NETNS_CHILD") == "1"
if not IN_NAMESPACE:
    reason = netns.unavailable_reason()
    if reason:
        print(f"SKIP: multinode_test: {reason}")
        sys.exit(77)

sys.path.insert(0, STUBS)
import grpc  # noqa: E402
import numpy as np  # noqa: E402
from moe.v1 import inference_pb2 as pb  # noqa: E402
from moe.v1 import telemetry_pb2 as tpb  # noqa: E402
from moe.v1 import admin_pb2_grpc as apbg  # noqa: E402
from moe.v1 import telemetry_pb2_grpc as tpbg  # noqa: E402
from harness import Harness  # noqa: E402
from streams import Streams  # noqa: E402

MODEL = os.path.join(WORK, "model")
GOLDEN = os.path.join(SRC, "tests/golden/e8_top2_bf16")
h = Harness(BIN, SRC, WORK)
check = h.check
CUT_BOUND_S = 8.0  # --worker-timeout-s 3, plus the heartbeat's three 500 ms intervals, plus slack
END_BOUND_S = 30.0  # from the cut to mpirun's exit


class Hosts:
    """The child's view of the network the parent made: addresses, hostfiles, mpirun's environment,
    and the links' controls (netns.Network's, without setup or teardown)."""

    def __init__(self, spec):
        self.net = netns.Network.from_spec(spec)

    def cluster(self, *flags, model=MODEL, workers=2, credentials=None):
        hostfile = self.net.hostfile(os.path.join(WORK, "hostfile"), range(workers + 1))
        return h.cluster(workers, "--admin-token-file", ADMIN_TOKEN, *flags, model=model, host=self.net.ips[0],
                         launch=("--hostfile", hostfile), env=self.net.mpi_env(), credentials=credentials)

    def launch(self, model, workers, coordinator_args, timeout=300):
        hostfile = self.net.hostfile(os.path.join(WORK, "hostfile"), range(workers + 1))
        return subprocess.run([os.path.join(SRC, "scripts/launch.sh"), "--model", model, "--workers", str(workers),
                               "--hostfile", hostfile, "--", *coordinator_args], capture_output=True, text=True,
                              timeout=timeout, env=dict(os.environ, **self.net.mpi_env()))


ADMIN_TOKEN = os.path.join(WORK, "admin.token")


def nothing_left(hosts, what):
    left = h.wait_for(lambda: not hosts.net.running() and True, f"{what}: every rank and daemon to end", 20)
    check(left is not None, f"{what}: no rank, daemon or mpirun left on any host ({hosts.net.running()})")


def logits(hosts):
    tokens = ",".join(map(str, json.load(open(os.path.join(GOLDEN, "golden.json")))["prompts"][1]))
    for mode in ("prefill", "incremental"):
        inc = ["--incremental"] if mode == "incremental" else []
        single, across = os.path.join(WORK, "single.npy"), os.path.join(WORK, "across.npy")
        h.run([os.path.join(BIN, "moe-logits"), "--model", GOLDEN, "--tokens", tokens, "--out", single, *inc])
        p = hosts.launch(GOLDEN, 2, ["--tokens", tokens, "--out", across, *inc])
        if not check(p.returncode == 0, f"logits across 3 hosts ({mode}): the job ran"):
            print(p.stderr[-2000:])
            continue
        a, b = np.load(across), np.load(single)
        err = float(np.linalg.norm(a - b) / np.linalg.norm(b))
        check(a.shape == b.shape and err < 1e-5, f"logits across hosts == the single process ({mode}): relative "
                                                 f"error {err:.1e}")


def certificates(address):
    """A CA and a server certificate for `address` (openssl, as a user would make them)."""
    d = os.path.join(WORK, "certs")
    os.makedirs(d, exist_ok=True)
    q = dict(cwd=d, check=True, capture_output=True)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
                    "-days", "1", "-subj", "/CN=moe-multinode-ca"], **q)
    with open(os.path.join(d, "san.cnf"), "w") as f:
        f.write(f"subjectAltName=IP:{address}\n")
    subprocess.run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
                    "-subj", "/CN=moe-coordinator"], **q)
    subprocess.run(["openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                    "-CAcreateserial", "-out", "server.pem", "-days", "1", "-extfile", "san.cnf"], **q)
    return {name: os.path.join(d, name) for name in ("ca.pem", "server.pem", "server.key")}


def serving(hosts):
    # TLS on the port: clients verify the coordinator's certificate, and the workers, across the
    # network, pin it for their load reports.
    certs = certificates(hosts.net.ips[0])
    c = hosts.cluster("--expert-slots", "5", "--telemetry-interval-ms", "100", "--tls-cert", certs["server.pem"],
                      "--tls-key", certs["server.key"],
                      credentials=grpc.ssl_channel_credentials(root_certificates=open(certs["ca.pem"], "rb").read()))
    try:
        log = open(c.log.name).read()
        check(f"on {hosts.net.ips[0]}:{c.port} (TLS)" in log, f"the coordinator serves TLS on the test network ({c.address})")
        streams = Streams(h, MODEL)
        streams.run_clients(c, "across hosts")
        tel = tpbg.TelemetryStub(c.channel)
        admin = apbg.AdminStub(c.channel)
        s = h.wait_for(lambda: (lambda s: s if all(w.alive and w.reported_tokens == w.routed_tokens > 0
                                                   for w in s.workers) else None)(tel.GetLoad(tpb.GetLoadRequest())),
                       "the workers' reports over the network")
        if s is not None:
            check(len(s.workers) == 2, "both workers report their load over the network (TLS, the coordinator's "
                                       "certificate pinned), every routed token: "
                                       f"{[(w.rank, w.routed_tokens, w.reported_tokens) for w in s.workers]}")
        token = open(ADMIN_TOKEN).read().strip()
        result = {}

        def rebalance():
            result["r"] = admin.Rebalance(tpb.RebalanceRequest(force=True), timeout=60,
                                        metadata=(("authorization", "Bearer " + token),))
        streams.run_clients(c, "re-placement across hosts", during=rebalance)
        r = result.get("r")
        check(r is not None and r.applied and r.rearrangement.ok and r.moved_slots > 0,
              f"a live re-placement across hosts: epoch {r.placement_epoch if r else '-'}, "
              f"{r.moved_slots if r else '-'} slots moved, loaded in "
              f"{r.rearrangement.load_seconds if r else 0:.3f} s; every stream's tokens unchanged")
        p = subprocess.run([os.path.join(BIN, "moe-cli"), "--server", c.address, "--tls-ca", certs["ca.pem"], "load",
                            "--once"],
                           capture_output=True, text=True, timeout=30)
        check(p.returncode == 0 and "worker host" in p.stdout, "moe-cli load reaches the coordinator across hosts")
        t0 = time.time()
        check(c.stop() == 0, f"SIGTERM: the job on 3 hosts exits 0 ({time.time() - t0:.1f} s)")
        nothing_left(hosts, "after SIGTERM")
    finally:
        c.kill()


EXCHANGE = re.compile(r"prefill exchange per layer: ([\d.]+) ms wall = ([\d.]+) ms slowest worker's experts \+ "
                      r"([\d.]+) ms transfer, packing and waiting; ([\d.]+) MB sent, ([\d.]+) MB received")


def bench(hosts, label):
    """(wall ms, transfer and waiting ms per layer, MB sent, MB received) of a prefill through the
    cluster."""
    p = hosts.launch(MODEL, 2, ["--bench", "--bench-prompt-tokens", "256", "--bench-decode-tokens", "4",
                                "--threads", "1"])
    m = EXCHANGE.search(p.stdout)
    if not check(p.returncode == 0 and m is not None, f"{label}: moe-coordinator --bench across hosts"):
        print((p.stdout + p.stderr)[-2000:])
        return None
    print(f"  {label}: {m.group(0)}")
    wall, experts, transfer, sent, received = map(float, m.groups())
    return wall, transfer, sent, received


def network_shapes(hosts):
    """The exchange under a bandwidth cap on the coordinator's link, which every row crosses (out to
    the workers, back with their results). The link is full duplex and the coordinator sends to one
    worker while another answers, so the bytes need at least max(sent, received) / rate and at
    most (sent + received) / rate.

    The lower bound holds the exchange's wall time: every byte crosses the link within it, however
    experts and transfers overlap. "Transfer and waiting" (wall minus the slowest worker's experts)
    undercounts the wire time when a worker computes while another's rows are still on it, so under
    load it can fall below the bound on a correct system; it is held to the upper bound only."""
    base = bench(hosts, "unshaped")
    if base is None:
        return
    rate_mbit = 100
    hosts.net.shape(0, f"{rate_mbit}mbit")
    try:
        shaped = bench(hosts, f"tbf {rate_mbit} Mbit/s on the coordinator's link")
    finally:
        hosts.net.unshape(0)
    if shaped is not None:
        wall, transfer, sent, received = shaped
        low, high = (max(sent, received) * 8e3 / rate_mbit, (sent + received) * 8e3 / rate_mbit)  # MB -> ms
        check(0.85 * low <= wall and transfer <= high + 5 * base[1],
              f"exchange at {rate_mbit} Mbit/s: {wall:.2f} ms per layer in all, {transfer:.2f} ms of it transfer and "
              f"waiting, for {sent:.3f} MB out and {received:.3f} MB back; the bytes and the rate predict "
              f"{low:.2f}-{high:.2f} ms ({wall / low:.2f}x the full-duplex bound); unshaped {base[1]:.2f} ms")
    why = hosts.net.delay(0, "50us")
    if why is not None:
        print(f"SKIP: multinode_test added latency: tc netem is not available here ({why})")
        return
    try:
        delayed = bench(hosts, "netem 50 us on the coordinator's link")
    finally:
        hosts.net.unshape(0)
    if delayed is not None:
        check(delayed[1] > base[1], f"exchange with 50 us added each way: {delayed[1]:.2f} ms per layer vs "
                                    f"{base[1]:.2f} ms without")


def link_cut(hosts):
    c = hosts.cluster("--telemetry-interval-ms", "500")
    try:
        outcomes, first, ended = {}, threading.Semaphore(0), {}

        def client(i):
            req = pb.GenerateRequest(text=f"Client {i} keeps streaming".encode(),
                                     sampling=pb.SamplingParams(max_tokens=900))
            got = False
            try:
                for m in c.stub.Generate(req, timeout=120):
                    if m.token_ids and not got:
                        got = True
                        first.release()
                outcomes[i] = ("OK", "")
            except grpc.RpcError as e:
                outcomes[i] = (e.code().name, e.details())
            finally:
                if not got:
                    first.release()
                ended[i] = time.monotonic()
        threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for _ in threads:
            first.acquire()
        cut = time.monotonic()
        hosts.net.cut(2)  # worker rank 2's host
        for t in threads:
            t.join(60)
        slowest = max(ended.values(), default=cut + 999) - cut
        named = all(code == "UNAVAILABLE" and "rank 2" in details for code, details in outcomes.values())
        check(len(outcomes) == 4 and named and slowest <= CUT_BOUND_S,
              f"a worker host's link cut mid-stream: 4 clients got {sorted({o[0] for o in outcomes.values()})} "
              f"naming rank 2 within {slowest:.1f} s (bound {CUT_BOUND_S:.0f} s): "
              f"{next(iter(outcomes.values()), ('', ''))[1][:160]!r}")
        try:
            rc = c.proc.wait(max(1.0, END_BOUND_S - (time.monotonic() - cut)))
            check(rc != 0, f"the job ended {time.monotonic() - cut:.1f} s after the cut, exit {rc} (bound "
                           f"{END_BOUND_S:.0f} s)")
        except subprocess.TimeoutExpired:
            check(False, f"the job still runs {END_BOUND_S:.0f} s after the cut")
        log = open(c.log.name).read()
        check("rank 2" in log and "serving stopped" in log, "the coordinator's log names rank 2")
        nothing_left(hosts, "after the link cut")
    finally:
        c.kill()


CASES = {"logits": logits, "serving": serving, "network_shapes": network_shapes, "link_cut": link_cut}


def child():
    hosts = Hosts(json.loads(os.environ["MOE_NETNS_SPEC"]))
    # MOE_MULTINODE_CASES=a,b runs only those (when working on one); all by default.
    for name in os.environ.get("MOE_MULTINODE_CASES", ",".join(CASES)).split(","):
        CASES[name](hosts)
    return h.finish()


def main():
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    h.make_model(MODEL, seed=12, hidden=256, intermediate=384, router_skew=3)
    with open(ADMIN_TOKEN, "w") as f:
        f.write(os.urandom(16).hex() + "\n")
    t0 = time.time()
    with netns.Network(3, WORK) as net:
        check(True, f"3 hosts in network namespaces ({', '.join(net.ips)}) on a bridge, up in {time.time() - t0:.2f} s")
        spec = dict(net.__dict__)
        # Everything else runs on the coordinator's host, as a user logged in there would.
        p = subprocess.run([*netns.enter(net.hosts[0]), sys.executable, os.path.abspath(__file__), *sys.argv[1:]],
                           env=dict(os.environ, MOE_NETNS_CHILD="1", MOE_NETNS_SPEC=json.dumps(spec)), timeout=1200)
        left = net.running()
        check(not left, f"no rank, daemon or mpirun left on any host when the test ends ({left})")
    gone = [ns for ns in net.hosts + [net.switch] if ns in netns.ip("netns", "list", check=False).stdout]
    check(not gone, f"the namespaces are gone after the test ({gone})")
    check(p.returncode == 0, "the cases on the hosts passed (above)")
    return h.finish()


if __name__ == "__main__":
    sys.exit(child() if IN_NAMESPACE else main())
