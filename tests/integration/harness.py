"""What the integration tests share: pass/fail accounting, running tools, and the cluster under
scripts/launch.sh serving on an ephemeral loopback port. The caller puts the generated gRPC stubs
(build/python) on sys.path before importing this."""
import os
import signal
import subprocess
import time

import grpc
from moe.v1 import inference_pb2 as pb
from moe.v1 import inference_pb2_grpc as pbg


class Harness:
    def __init__(self, bin_dir, src_dir, work_dir):
        self.bin, self.src, self.work = bin_dir, src_dir, work_dir
        self.results = {"passed": 0, "failed": 0}

    def check(self, ok, what):
        self.results["passed" if ok else "failed"] += 1
        print(("ok: " if ok else "FAIL: ") + what, flush=True)
        return ok

    def finish(self):
        """Prints the tally; the exit code for sys.exit."""
        print(f"{self.results['passed']} passed, {self.results['failed']} failed")
        return 1 if self.results["failed"] else 0

    def wait_for(self, predicate, what, timeout=20):
        """predicate()'s first truthy value, polled every 0.1 s; None (a failed check) at the timeout."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.1)
        self.check(False, f"timed out waiting for {what}")
        return None

    def wait_idle(self, stub, what, timeout=10):
        """Checks that the server soon has nothing running or waiting and no KV cache held (GetModelInfo)."""
        t0 = time.time()
        while time.time() - t0 < timeout:
            i = stub.GetModelInfo(pb.GetModelInfoRequest())
            if i.running_sequences == 0 and i.waiting_requests == 0 and i.kv_cache_bytes_used == 0:
                return self.check(True, f"{what}: nothing running, no KV cache held after {time.time() - t0:.2f} s")
            time.sleep(0.02)
        i = stub.GetModelInfo(pb.GetModelInfoRequest())
        return self.check(False, f"{what}: still {i.running_sequences} running, {i.kv_cache_bytes_used} KV bytes")

    def make_model(self, out, seed, **shape):
        """A small random checkpoint (scripts/make_model.py) with the real tokenizer: 2 layers, 64
        wide, 8 experts top-2, BF16, unless `shape` says otherwise (keys are make_model's flags,
        dashes as underscores: intermediate=384, router_skew=3)."""
        flags = dict(vocab=32000, hidden=64, intermediate=96, layers=2, heads=4, kv_heads=2, experts=8, top_k=2,
                     max_pos=1024, dtype="bf16")
        flags.update(shape)
        args = [a for k, v in flags.items() for a in (f"--{k.replace('_', '-')}", str(v))]
        self.run(["/usr/bin/python3", os.path.join(self.src, "scripts/make_model.py"), "--out", out, *args,
                  "--seed", str(seed), "--tokenizer", os.path.join(self.src, "core/model/tokenizer/tokenizer.model")])

    @staticmethod
    def run(cmd, **kw):
        return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout

    def cluster(self, workers, *server_flags, model, credentials=None, host="127.0.0.1", launch=(), env=None):
        """credentials: grpc channel credentials for a TLS server (default: plaintext); host: the
        address it listens on; launch: more scripts/launch.sh flags (--hostfile F); env: more
        environment for mpirun."""
        return Cluster(self, workers, server_flags, model, credentials, host, launch, env)


def job_pids(model):
    """mpirun and the ranks of a cluster: every process run with --model MODEL (mpirun runs in a
    session of its own, out of launch.sh's process group)."""
    want, pids = [b"--model", model.encode()], []
    for d in os.listdir("/proc"):
        try:
            args = open(f"/proc/{d}/cmdline", "rb").read().split(b"\0") if d.isdigit() else []
        except OSError:
            continue
        if any(args[i:i + 2] == want for i in range(len(args) - 1)):
            pids.append(int(d))
    return pids


def kill_job(model):
    """SIGKILL to whatever is left of a cluster of MODEL (a test's clean-up)."""
    for pid in job_pids(model):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class Cluster:
    """The cluster under scripts/launch.sh, serving on an ephemeral loopback port."""

    def __init__(self, h, workers, server_flags, model, credentials=None, host="127.0.0.1", launch=(), env=None):
        self.model = model
        self.port_file = os.path.join(h.work, f"port-{time.monotonic_ns()}")
        env = dict(os.environ, BUILD_DIR=os.path.dirname(h.bin), **(env or {}))
        self.log = open(os.path.join(h.work, f"cluster-w{workers}-{os.path.basename(self.port_file)}.log"), "w")
        self.proc = subprocess.Popen(
            [os.path.join(h.src, "scripts/launch.sh"), "--model", model, "--workers", str(workers), *launch, "--",
             "--listen", f"{host}:0", "--port-file", self.port_file, "--worker-timeout-s", "3",
             *server_flags], stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.time() + 120
        while not os.path.exists(self.port_file):
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"cluster did not start: see {self.log.name}")
            time.sleep(0.1)
        self.port = int(open(self.port_file).read())
        self.address = f"{host}:{self.port}"
        options = [("grpc.enable_http_proxy", 0)]
        self.channel = (grpc.insecure_channel(self.address, options=options) if credentials is None
                        else grpc.secure_channel(self.address, credentials, options=options))
        self.stub = pbg.InferenceStub(self.channel)

    def pid_of(self, program):
        out = subprocess.run(["pgrep", "-f", f"^[^ ]*{program} --model {self.model}"], capture_output=True,
                             text=True).stdout
        return [int(p) for p in out.split()]

    def kill(self):
        """Ends whatever is left of the job at once (a test's clean-up)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        kill_job(self.model)

    def stop(self, sig=signal.SIGTERM, timeout=60):
        if self.proc.poll() is None:
            for pid in self.pid_of("moe-coordinator"):
                os.kill(pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self.channel.close()
        self.log.close()
        return self.proc.returncode


def generate(stub, prompt, timeout=None, on_message=None, **sampling):
    """Returns (token ids, text, last message); on_message(msg) sees each message as it arrives."""
    req = pb.GenerateRequest(sampling=pb.SamplingParams(**sampling))
    if isinstance(prompt, list):
        req.token_ids.ids.extend(prompt)
    else:
        req.text = prompt.encode()
    ids, text, last = [], "", None
    for msg in stub.Generate(req, timeout=timeout):
        if on_message is not None:
            on_message(msg)
        ids += list(msg.token_ids)
        text += msg.text
        last = msg
    return ids, text, last
