#!/usr/bin/env python3
"""Writes the demo model's held-out Python as one text file, for perplexity tools.

The held-out files are the ones deploy/models/pystd/training.json lists (never trained on): Python
sources that Debian's packages install. Files missing on this machine are skipped and counted; the
output is their texts joined by a blank line, in the listed order, so moe-perplexity and
llama-perplexity read exactly the same bytes.

    /usr/bin/python3 scripts/heldout_text.py OUT.txt [--only-stdlib] [--max-files N]

--only-stdlib keeps the files under /usr/lib/python3.11 (present wherever python3.11 is).
"""
import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TRAINING = os.path.join(HERE, "..", "deploy", "models", "pystd", "training.json")


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--only-stdlib", action="store_true")
    ap.add_argument("--max-files", type=int, default=0)
    a = ap.parse_args(argv)
    files = json.load(open(TRAINING))["corpus"]["held_out_files"]
    if a.only_stdlib:
        files = [f for f in files if f.startswith("/usr/lib/python3.11/")]
    if a.max_files:
        files = files[: a.max_files]
    texts, missing = [], 0
    for path in files:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                texts.append(f.read())
        except OSError:
            missing += 1
    with open(a.out, "w", encoding="utf-8") as f:
        f.write("\n\n".join(texts))
    print("heldout_text: %d of %d held-out files (%d missing here), %d bytes -> %s"
          % (len(texts), len(files), missing, sum(len(t) for t in texts), a.out))
    return 0 if texts else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
