"""The Python client package (coordinator/client/python) as a user installs it: into a fresh virtual
environment (over Debian's python3-grpcio and python3-protobuf), its stubs generated from proto/
at install time, then used from that environment's Python against a real cluster (2 workers):

- scripts/client_example.py runs on the installed package (not the build's stubs) and streams;
- generate() streams text and token ids equal to moe-generate's for the same greedy request,
  with the request id, finish reason and usage; generate_text() gives the same text;
- load() is plain Python (ints, not the strings json_format makes of int64) and counts the tokens;
- errors are typed: InvalidArgument for max_tokens 0 and a bad label, Unavailable for a closed port;
- all of it holds on the oldest protobuf runtime the package supports (Debian 12's, 4.21) and on the
  newest on PyPI (7.x, whose FieldDescriptor has no `label`), installed offline from the wheel
  scripts/install-python-deps.sh downloads into .venv-test/wheels.

usage: python_client_test.py BIN_DIR SOURCE_DIR WORK_DIR PYTHON_STUBS_DIR
Prints "N passed, M failed" and exits non-zero on any failure.
"""
import json
import os
import shutil
import subprocess
import sys

BIN, SRC, WORK, STUBS = sys.argv[1:5]
sys.path.insert(0, STUBS)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Harness  # noqa: E402

PY = "/usr/bin/python3"
WHEELS = os.path.join(os.environ.get("MOE_TEST_VENV", os.path.join(SRC, ".venv-test")), "wheels")
MODEL = os.path.join(WORK, "model")
h = Harness(BIN, SRC, WORK)
check = h.check

USE_PACKAGE = r'''
import json, sys
import moe_client
assert "site-packages" in moe_client.__file__, moe_client.__file__  # the installed package
client = moe_client.Client(sys.argv[1])
chunks = list(client.generate("The quick brown fox", max_tokens=12, label="pkg"))
ids = [t for c in chunks for t in c.token_ids]
last = chunks[-1]
out = dict(ids=ids, text="".join(c.text for c in chunks), request_ids=sorted({c.request_id for c in chunks}),
           finish=last.finish_reason, generated=last.usage.generated_tokens,
           text_again=client.generate_text("The quick brown fox", max_tokens=12))
load = client.load()
out["load_types"] = sorted({type(x).__name__ for x in load["layers"][0]["expert_tokens"]})
out["load_tokens"] = load["tokens"]
out["labels"] = [l.get("label", "") for l in load.get("labels", [])]
info = client.model_info()
out["model_layers"] = info.get("num_hidden_layers", 0) if len(info.get("placement", [])) == info.get("num_hidden_layers") else -1
import google.protobuf
out["protobuf"] = google.protobuf.__version__
errors = {}
for name, call in (("max_tokens 0", lambda: list(client.generate("hi", max_tokens=0))),
                   ("bad label", lambda: list(client.generate("hi", max_tokens=1, label="no spaces"))),
                   ("closed port", lambda: moe_client.Client("127.0.0.1:1").model_info())):
    try:
        call()
        errors[name] = "no error"
    except moe_client.MoeError as e:
        errors[name] = [type(e).__name__, e.code]
out["errors"] = errors
print(json.dumps(out))
'''


def main():
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    h.make_model(MODEL, seed=3, experts=4, max_pos=512)
    # Install as a user would, from a copy (the build writes its stubs beside setup.py).
    pkg = os.path.join(WORK, "python-client")
    shutil.copytree(os.path.join(SRC, "coordinator/client/python"), pkg,
                    ignore=shutil.ignore_patterns("build", "moe", "*.egg-info", "__pycache__"))
    venvs = {}
    for runtime in ("debian", "newest"):
        venv = os.path.join(WORK, f"venv-{runtime}")
        h.run([PY, "-m", "venv", "--system-site-packages", venv])
        vpy = venvs[runtime] = os.path.join(venv, "bin", "python")
        if runtime == "newest":
            # Over Debian's (system site packages): the venv's own copy comes first on sys.path.
            p = subprocess.run([vpy, "-m", "pip", "install", "--no-index", "-q", "--find-links", WHEELS,
                                "--ignore-installed", "protobuf>=5"],
                               capture_output=True, text=True)
            check(p.returncode == 0, f"protobuf from {WHEELS} (scripts/install-python-deps.sh downloads it): "
                  f"{p.stderr.strip()[-300:] or 'ok'}")
        p = subprocess.run([vpy, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "--no-index", "-q", pkg],
                           capture_output=True, text=True, env=dict(os.environ, PROTO_DIR=os.path.join(SRC, "proto")))
        check(p.returncode == 0, f"pip install ./coordinator/client/python into a fresh venv ({runtime} protobuf): "
              f"{p.stderr.strip()[-300:] or 'ok'}")
    vpy = venvs["debian"]
    want = h.run([os.path.join(BIN, "moe-generate"), "--model", MODEL, "--prompt", "The quick brown fox",
                  "--max-tokens", "12", "--print-ids", "--threads", "1"]).strip()
    want_ids = [int(x) for x in want.split(",") if x]
    c = h.cluster(2, model=MODEL)
    try:
        # No build stubs to fall back on: it must run on the installed package.
        p = subprocess.run([vpy, os.path.join(SRC, "scripts/client_example.py"), "--server", c.address,
                            "--prompt", "Hello", "--max-tokens", "4", "--label", "example"],
                           capture_output=True, text=True, timeout=120, cwd=WORK,
                           env=dict(os.environ, MOE_PYTHON_STUBS=os.path.join(WORK, "no-stubs")))
        check(p.returncode == 0 and "LENGTH] 4 tokens" in p.stdout and "request " in p.stdout,
              f"client_example.py on the installed package: {p.stdout.strip().splitlines()[-1:] or p.stderr[-300:]}")
        for runtime, vpy in venvs.items():
            p = subprocess.run([vpy, "-c", USE_PACKAGE, c.address], capture_output=True, text=True, timeout=120,
                               cwd=WORK)
            if p.returncode != 0:
                check(False, f"the package's API ({runtime} protobuf): {p.stderr.strip()[-600:]}")
                continue
            r = json.loads(p.stdout)
            tag = f"protobuf {r['protobuf']}"
            check(runtime == "debian" or r["protobuf"].split(".")[0] >= "5", f"{runtime} runtime: {tag}")
            check(r["ids"] == want_ids and len(r["request_ids"]) == 1 and r["finish"] in ("length", "eos")
                  and r["generated"] == len(want_ids) and r["text"] == r["text_again"],
                  f"{tag}: generate(): {len(r['ids'])} token ids equal to moe-generate's, one request id "
                  f"{r['request_ids']}, finish '{r['finish']}', generate_text() the same text")
            check(r["load_types"] == ["int"] and r["load_tokens"] > 0 and "pkg" in r["labels"]
                  and r["model_layers"] > 0,
                  f"{tag}: load(): plain ints, {r['load_tokens']} tokens, labels {r['labels']}; "
                  f"model_info(): {r['model_layers']} layers")
            e = r["errors"]
            check(e["max_tokens 0"] == ["InvalidArgument", "INVALID_ARGUMENT"]
                  and e["bad label"] == ["InvalidArgument", "INVALID_ARGUMENT"]
                  and e["closed port"] == ["Unavailable", "UNAVAILABLE"], f"{tag}: typed errors: {e}")
    finally:
        check(c.stop() == 0, "SIGTERM: the cluster exits 0")


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # a harness failure (a command that failed): reported as a failed check
        check(False, f"{type(e).__name__}: {e}")
    sys.exit(h.finish())
