"""EleutherAI's lm-evaluation-harness (lm-eval 0.4.13, pinned in .venv-test) against a real
cluster (2 workers, --cpu-numerics f32) through its `local-completions` model, as users run it:
`python -m lm_eval --model local-completions`, the tokenizer from deploy/models/pystd's
tokenizer.json (moe-export-tokenizer), --batch_size 4, two tasks in tests/golden/lm_eval:

- pystd_next_line (multiple choice on held-out Python, lm-eval's log-likelihood path: token-id
  prompts, echo, logprobs 1, max_tokens 1): every choice's log-likelihood equals Hugging Face
  `transformers`' for the same tokens (float32 logits, log_softmax in float64, as the server takes
  it; scripts/make_lm_eval_golden.py) within 1e-4, and so does the accuracy;
- pystd_complete (generate_until a blank line, greedy, 32 tokens): the texts transformers
  generated, exactly (prompts whose greedy path has a clear lead at every step).

usage: lm_eval_test.py BIN_DIR SOURCE_DIR WORK_DIR PYTHON_STUBS_DIR   (runs itself under .venv-test)
Prints "N passed, M failed" and exits non-zero on any failure.
"""
import glob
import json
import os
import shutil
import subprocess
import sys
import time

BIN, SRC, WORK, STUBS = sys.argv[1:5]
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_venv import reexec_under_test_venv  # noqa: E402

VENV = reexec_under_test_venv(SRC)
VENV_PY = os.path.join(VENV, "bin", "python")

sys.path.insert(0, STUBS)
from harness import Harness  # noqa: E402

MODEL = os.path.join(SRC, "deploy/models/pystd")
TASKS = os.path.join(SRC, "tests/golden/lm_eval")
TOLERANCE = 1e-4
h = Harness(BIN, SRC, WORK)
check = h.check


def samples(out_dir, task):
    """{doc_id: sample} from the samples file lm-eval logged for a task."""
    paths = glob.glob(os.path.join(out_dir, "**", f"samples_{task}_*.jsonl"), recursive=True)
    if len(paths) != 1:
        return {}
    with open(paths[0]) as f:
        return {s["doc_id"]: s for s in map(json.loads, f)}


def check_results(out_dir, golden):
    choice = samples(out_dir, "pystd_next_line")
    want = golden["loglikelihoods"]
    check(sorted(map(str, choice)) == sorted(want), f"{len(choice)} multiple-choice documents, as the golden's")
    worst, acc, golden_acc = 0.0, 0, 0
    for doc_id, s in choice.items():
        got = [float(r[0][0]) for r in s["resps"]]
        ref = want[str(doc_id)]
        worst = max(worst, max(abs(a - b) for a, b in zip(got, ref)) if len(got) == len(ref) else float("inf"))
        label = s["doc"]["label"]
        acc += max(range(len(got)), key=got.__getitem__) == label
        golden_acc += max(range(len(ref)), key=ref.__getitem__) == label
    check(worst <= TOLERANCE, f"every choice's log-likelihood == transformers' (worst |diff| {worst:.2e} "
          f"<= {TOLERANCE}, {sum(len(s['resps']) for s in choice.values())} choices)")
    check(acc == golden_acc, f"accuracy {acc}/{len(choice)} == transformers' {golden_acc}/{len(choice)}")

    gen = samples(out_dir, "pystd_complete")
    same = sum(gen[int(d)]["resps"][0][0] == text for d, text in golden["generations"].items() if int(d) in gen)
    check(len(gen) == len(golden["generations"]) and same == len(gen),
          f"generate_until: {same} of {len(golden['generations'])} greedy texts == transformers'")


def main():
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    with open(os.path.join(TASKS, "golden.json")) as f:
        golden = json.load(f)
    port_file = os.path.join(WORK, "http-port")
    c = h.cluster(2, "--http-listen", "127.0.0.1:0", "--http-port-file", port_file, "--served-model-name", "pystd",
                  model=MODEL, launch=("--cpu-numerics", "f32"))
    try:
        port = int(h.wait_for(lambda: os.path.exists(port_file) and open(port_file).read().strip(), "HTTP port"))
        out_dir = os.path.join(WORK, "results")
        args = [VENV_PY, "-m", "lm_eval", "--model", "local-completions", "--model_args",
                f"model=pystd,base_url=http://127.0.0.1:{port}/v1/completions,tokenizer={MODEL},"
                "tokenizer_backend=huggingface,tokenized_requests=True,add_bos_token=True,max_retries=1,"
                "timeout=120",
                "--tasks", "pystd_next_line,pystd_complete", "--include_path", TASKS, "--batch_size", "4",
                "--log_samples", "--output_path", out_dir]
        # Offline: the tasks' data are local files, the tokenizer a directory; datasets' cache in WORK.
        env = dict(os.environ, HF_HOME=os.path.join(WORK, "hf"), HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1",
                   TOKENIZERS_PARALLELISM="false", no_proxy="127.0.0.1,localhost")
        start = time.monotonic()
        with open(os.path.join(WORK, "lm_eval.log"), "w") as log:
            p = subprocess.run(args, cwd=TASKS, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=600)
        print(f"lm_eval ran {time.monotonic() - start:.1f} s, exit {p.returncode}")
        check(p.returncode == 0, f"lm_eval exits 0 (log: {os.path.join(WORK, 'lm_eval.log')})")
        if p.returncode == 0:
            check_results(out_dir, golden)
        else:
            with open(os.path.join(WORK, "lm_eval.log")) as f:
                print(f.read()[-3000:])
    finally:
        c.stop()
    sys.exit(h.finish())


main()
