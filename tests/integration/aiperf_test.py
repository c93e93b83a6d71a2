"""NVIDIA's aiperf (0.13.0, pinned in .venv-test) benchmarking a real cluster (2 workers) as users
run it: `aiperf profile` against the OpenAI API with `--tokenizer deploy/models/pystd` (the model's
tokenizer.json, loaded offline), synthetic prompts, bounded in time:

- completions, streamed: 32 requests at concurrency 4 of 64 prompt tokens and 32 output tokens
  with `ignore_eos`: all 32 complete, 0 errors, every output exactly 32 tokens and every prompt
  the 64 tokens aiperf's tokenizer counted (the server's usage agrees with it), TTFT and
  inter-token latency measured; the server's /metrics counts the requests;
- chat, not streamed: 8 requests, 0 errors, each 16 tokens.

usage: aiperf_test.py BIN_DIR SOURCE_DIR WORK_DIR PYTHON_STUBS_DIR   (runs itself under .venv-test)
Prints "N passed, M failed" and exits non-zero on any failure.
"""
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request

BIN, SRC, WORK, STUBS = sys.argv[1:5]
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_venv import reexec_under_test_venv  # noqa: E402

VENV = reexec_under_test_venv(SRC)

sys.path.insert(0, STUBS)
from harness import Harness  # noqa: E402

MODEL = os.path.join(SRC, "deploy/models/pystd")
h = Harness(BIN, SRC, WORK)
check = h.check


def aiperf(port, name, *args):
    """Runs `aiperf profile`; returns (exit code, its JSON summary, its per-request records)."""
    out = os.path.join(WORK, name)
    cmd = [os.path.join(VENV, "bin", "aiperf"), "profile", "--model", "pystd", "--url", f"http://127.0.0.1:{port}",
           "--tokenizer", MODEL, "--random-seed", "1", "--ui-type", "none", "--use-server-token-count",
           "--request-timeout-seconds", "60", "--artifact-dir", out, *args]
    # Not HF_HUB_OFFLINE: aiperf 0.13 then looks a local tokenizer directory up in the hub's cache.
    # A directory never touches the network.
    env = dict(os.environ, no_proxy="127.0.0.1,localhost")
    start = time.monotonic()
    with open(os.path.join(WORK, f"{name}.log"), "w") as log:
        p = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=300, cwd=WORK)
    print(f"aiperf {name}: exit {p.returncode} after {time.monotonic() - start:.1f} s")
    summary, records = {}, []
    if os.path.exists(os.path.join(out, "profile_export_aiperf.json")):
        with open(os.path.join(out, "profile_export_aiperf.json")) as f:
            summary = json.load(f)
        with open(os.path.join(out, "profile_export.jsonl")) as f:
            records = [json.loads(line) for line in f if line.strip()]
    if p.returncode != 0:
        with open(os.path.join(WORK, f"{name}.log")) as f:
            print(f.read()[-3000:])
    return p.returncode, summary, records


def values(records, metric):
    return [r["metrics"][metric]["value"] for r in records if metric in r.get("metrics", {})]


def main():
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    port_file = os.path.join(WORK, "http-port")
    c = h.cluster(2, "--http-listen", "127.0.0.1:0", "--http-port-file", port_file, "--served-model-name", "pystd",
                  model=MODEL)
    try:
        port = int(h.wait_for(lambda: os.path.exists(port_file) and open(port_file).read().strip(), "HTTP port"))
        rc, summary, records = aiperf(
            port, "completions", "--endpoint-type", "completions", "--streaming", "--request-count", "32",
            "--concurrency", "4", "--synthetic-input-tokens-mean", "64", "--synthetic-input-tokens-stddev", "0",
            "--output-tokens-mean", "32", "--output-tokens-stddev", "0", "--extra-inputs", "ignore_eos:true")
        errors = [r for r in records if r.get("error")]
        osl, isl = values(records, "output_sequence_length"), values(records, "input_sequence_length")
        check(rc == 0 and len(records) == 32 and not errors,
              f"completions: aiperf exits {rc}, {len(records)} of 32 requests recorded, {len(errors)} errors")
        check(osl == [32] * 32, f"ignore_eos: every output exactly 32 tokens ({sorted(set(osl))})")
        check(isl == [64] * 32, f"every prompt the 64 tokens aiperf's tokenizer made ({sorted(set(isl))})")
        ttft = summary.get("time_to_first_token", {})
        itl = summary.get("inter_token_latency", {})
        check(ttft.get("count") == 32 and ttft.get("avg", 0) > 0 and itl.get("avg", 0) > 0,
              f"TTFT avg {ttft.get('avg', 0):.1f} ms, inter-token latency avg {itl.get('avg', 0):.2f} ms "
              f"(2 cores shared by aiperf and the cluster)")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            page = r.read().decode()
        # Each ran to max_tokens (finish reason "length"); aiperf's readiness probe may add one.
        done = [float(line.split()[-1]) for line in page.splitlines()
                if line.startswith('moe_requests_total{outcome="length"}')]
        check(done and 32 <= done[0] <= 34, f"the server's /metrics counts the requests ({done})")

        rc, summary, records = aiperf(
            port, "chat", "--endpoint-type", "chat", "--request-count", "8", "--concurrency", "2",
            "--synthetic-input-tokens-mean", "48", "--synthetic-input-tokens-stddev", "0",
            "--output-tokens-mean", "16", "--output-tokens-stddev", "0", "--extra-inputs", "ignore_eos:true")
        errors = [r for r in records if r.get("error")]
        check(rc == 0 and len(records) == 8 and not errors
              and values(records, "output_sequence_length") == [16] * 8,
              f"chat: aiperf exits {rc}, {len(records)} of 8 recorded, {len(errors)} errors, 16 tokens each")
    finally:
        c.stop()
    sys.exit(h.finish())


main()
