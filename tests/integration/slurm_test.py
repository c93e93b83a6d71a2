"""deploy/slurm/moe.sbatch under a real Slurm: Debian's slurmctld, slurmd and munged started by the
test as a one-node cluster (tests/integration/local_slurm.py), jobs submitted with sbatch as a
user would, their output checked:

- a one-shot job (3 tasks: a coordinator and 2 workers) prints moe-generate's greedy text;
- a serving job answers gRPC with moe-generate's tokens, and `scancel --batch --signal=TERM` stops it
  gracefully;
- a job with too few tasks fails saying why.

Skipped (exit 77, with the reason) only where the machine cannot run slurmd (not root).
usage: slurm_test.py BIN_DIR SOURCE_DIR WORK_DIR PYTHON_STUBS_DIR
"""
import os
import re
import shutil
import subprocess
import sys
import time

BIN, SRC, WORK, STUBS = sys.argv[1:5]
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import local_slurm  # noqa: E402

reason = local_slurm.unavailable_reason()
if reason:
    print(f"SKIP: slurm_test: {reason}")
    sys.exit(77)

sys.path.insert(0, STUBS)
import grpc  # noqa: E402
from harness import Harness, generate  # noqa: E402

MODEL = os.path.join(WORK, "model")
SBATCH = os.path.join(SRC, "deploy/slurm/moe.sbatch")
h = Harness(BIN, SRC, WORK)
check = h.check


def sbatch(slurm, *args, env=None, wait=False, timeout=300):
    """Submits from the repository's root, as the recipe says; returns (job id, output file, process)."""
    out = os.path.join(WORK, f"job-{time.monotonic_ns()}.out")
    cmd = ["sbatch", "--parsable", f"--output={out}", *(["--wait"] if wait else []), *args]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=SRC, timeout=timeout,
                       env=dict(slurm.env(), BUILD_DIR=os.path.dirname(BIN), **(env or {})))
    job = p.stdout.strip().split(";")[0]
    return job, out, p


def read(path):
    return open(path).read() if os.path.exists(path) else ""


def ranks_left():
    """The jobs' processes still running (their model is this test's)."""
    p = subprocess.run(["pgrep", "-f", f"(moe-coordinator|moe-worker|mpirun) .*--model {MODEL}"], capture_output=True,
                       text=True)
    return [int(x) for x in p.stdout.split()]


def main():
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    h.make_model(MODEL, seed=4, max_pos=512)
    prompt = "The quick brown fox"
    want_text = h.run([os.path.join(BIN, "moe-generate"), "--model", MODEL, "--prompt", prompt, "--max-tokens",
                       "12", "--threads", "1"])
    want_ids = [int(x) for x in h.run([os.path.join(BIN, "moe-generate"), "--model", MODEL, "--prompt", prompt,
                                       "--max-tokens", "12", "--print-ids", "--threads", "1"]).split(",") if x.strip()]
    t0 = time.time()
    try:
        return run_jobs(prompt, want_text, want_ids, t0)
    finally:
        for pid in ranks_left():  # whatever a failed case left behind
            os.kill(pid, 9)


def run_jobs(prompt, want_text, want_ids, t0):
    with local_slurm.LocalSlurm(WORK, cpus=4) as slurm:
        check(True, f"a one-node Slurm (slurmctld, slurmd, munged) up in {time.time() - t0:.1f} s")

        job, out, p = sbatch(slurm, SBATCH, "--prompt", prompt, "--max-tokens", "12", env={"MOE_MODEL": MODEL},
                             wait=True)
        text = read(out)
        check(p.returncode == 0 and re.search(rf"moe.sbatch: job {job} on \S+: 1 coordinator \+ 2 workers", text)
              and want_text.strip() in text,
              f"sbatch --wait moe.sbatch --prompt ...: job {job} exited {p.returncode}, printed moe-generate's text "
              f"({want_text.strip()[:40]!r}...) {p.stderr.strip()[-200:]}")

        port_file = os.path.join(WORK, "port")
        job, out, p = sbatch(slurm, SBATCH, "--listen", "127.0.0.1:0", "--port-file", port_file,
                             env={"MOE_MODEL": MODEL})
        check(p.returncode == 0 and job.isdigit(), f"sbatch moe.sbatch (serving): job {job}")
        port = h.wait_for(lambda: os.path.exists(port_file) and open(port_file).read().strip(), "the job's port", 120)
        if port:
            channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.enable_http_proxy", 0)])
            from moe.v1 import inference_pb2_grpc as pbg
            ids, _, _ = generate(pbg.InferenceStub(channel), prompt, timeout=60, max_tokens=12)
            check(ids == want_ids, f"the Slurm job serves gRPC: {len(ids)} tokens equal moe-generate's")
            channel.close()
        subprocess.run(["scancel", "--batch", "--signal=TERM", job], env=slurm.env(), timeout=30)
        gone = h.wait_for(lambda: subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True,
                                                 env=slurm.env(), timeout=10).stdout.strip() == "", "the job to end", 60)
        check(gone is not None and "server stopped" in read(out),
              f"scancel --batch --signal=TERM: the job ends gracefully ({read(out).strip().splitlines()[-1:]})")

        check(not ranks_left(), f"after the job: no rank or mpirun of it left ({ranks_left()})")

        job, out, p = sbatch(slurm, "--ntasks=1", SBATCH, env={"MOE_MODEL": MODEL}, wait=True)
        check(p.returncode != 0 and "--ntasks must be at least 2" in read(out),
              f"a job of one task fails saying why: {read(out).strip()[-120:]!r}")
    return h.finish()


if __name__ == "__main__":
    sys.exit(main())
