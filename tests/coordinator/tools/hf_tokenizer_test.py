"""moe-export-tokenizer's tokenizer.json and tokenizer_config.json against our own tokenizer
(moe-tokenize), through the libraries other tools load them with: Hugging Face `tokenizers` and
`transformers`' AutoTokenizer (from .venv-test; no torch).

- the files the embedded model ships (deploy/models/pystd) are what the tool writes today, byte
  for byte; files already in a directory are kept unless --force;
- on a corpus of awkward text (hand-picked edge cases, held-out Python source, 3,000 seeded random
  strings of whitespace runs, accents, combining marks, CJK, emoji, astral and private-use
  characters, U+FFFD and "▁" itself) both libraries give our token ids, BOS first where asked,
  and decode our ids to our text;
- the one documented difference: text spelling a control token ("<s>") is that token to Hugging
  Face (as Mixtral's own tokenizer.json has it) and plain text to the server;
- AutoTokenizer's apply_chat_template gives the ids of tests/golden/chat (transformers' own
  rendering of Mixtral-Instruct's template), which the server's chat also gives, for every case
  whose messages spell no control token.

usage: hf_tokenizer_test.py BIN_DIR SOURCE_DIR WORK_DIR   (runs itself under .venv-test)
Prints "N passed, M failed" and exits non-zero on any failure.
"""
import filecmp
import glob
import json
import os
import random
import shutil
import subprocess
import sys

BIN, SRC, WORK = sys.argv[1:4]
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "integration"))
from test_venv import reexec_under_test_venv  # noqa: E402

reexec_under_test_venv(SRC)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
import tokenizers  # noqa: E402
import transformers  # noqa: E402

MODEL = os.path.join(SRC, "deploy/models/pystd")
failures = []
passed = 0


def check(ok, what):
    global passed
    if ok:
        passed += 1
    else:
        failures.append(what)
        print(f"FAIL: {what}")


def moe_tokenize(lines, *flags):
    p = subprocess.run([os.path.join(BIN, "moe-tokenize"), "--model", MODEL, *flags],
                       input="".join(json.dumps(x) + "\n" for x in lines), capture_output=True, text=True,
                       check=True)
    return [json.loads(line) for line in p.stdout.splitlines()]


def random_strings(n, seed=0):
    rng = random.Random(seed)
    pools = [" ", "  ", "\t", "\n", "\r\n", "    ", "\u00a0", "\u3000", "\u2581", "\ufffd", "\u200b",
             "abcXYZ019_.,;:()[]{}<>=+-*/%#@!?'\"\\`~^|&$", "éèêëàâäôöûüçñßøåæœ", "\u0301\u0308\u0327",
             "日本語中文한국어", "Привет мир", "مرحبا", "🙂🚀👍🏽👨‍👩‍👧", "𝄞𓀀🜁", "\ue000\uf8ff", "ǅﬁℌ½²"]
    out = []
    for _ in range(n):
        s = []
        for _ in range(rng.randint(1, 12)):
            pool = rng.choice(pools)
            s.append("".join(rng.choice(pool) for _ in range(rng.randint(1, 6))) if len(pool) > 2 else pool)
        out.append("".join(s))
    return out


def corpus():
    hand = ["", " ", "  ", "a", " a", "a ", "  leading and trailing  ", "tab\there", "new\nline\n\n",
            "Hello world", "The quick brown fox jumps over the lazy dog.", "1234567890 3.14159",
            "naïve café — 日本語のテキスト 🙂🚀 done", "𝄞 ꙮ 𓀀 🜁", "def add(a, b):\n    return a + b",
            "ÀÁÂÃÄÅ ǅ ﬁ ℌ", "\ufffd", "...!!!???", "▁▁ ▁x", "https://example.com/path?q=1&r=2",
            "C'est l'été. ¿Qué tal? Привет, мир!", "\x00\x01\x7f", "a" * 500, " " * 300, "\n" * 50]
    source = []
    for path in sorted(glob.glob("/usr/lib/python3.11/[a-c]*.py"))[:12]:
        with open(path, encoding="utf-8", errors="replace") as f:
            source.append(f.read()[:30000])
    return hand + source + random_strings(3000)


def main():
    os.makedirs(WORK, exist_ok=True)
    out = os.path.join(WORK, "export")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    export = [os.path.join(BIN, "moe-export-tokenizer"), "--model", MODEL, "--out", out]
    subprocess.run(export, check=True, capture_output=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        check(filecmp.cmp(os.path.join(out, name), os.path.join(MODEL, name), shallow=False),
              f"deploy/models/pystd/{name} is what moe-export-tokenizer writes (rerun it with --force)")
    with open(os.path.join(out, "tokenizer_config.json"), "a") as f:
        f.write(" ")
    p = subprocess.run(export, capture_output=True, text=True)
    kept = open(os.path.join(out, "tokenizer_config.json")).read().endswith(" ")
    check(p.returncode == 0 and "kept" in p.stdout and kept, f"files already there are kept: {p.stdout}")
    subprocess.run(export + ["--force"], check=True, capture_output=True)
    check(not open(os.path.join(out, "tokenizer_config.json")).read().endswith(" "), "--force replaces them")
    p = subprocess.run(export + ["--chat-template", "chatml"], capture_output=True, text=True)
    check(p.returncode != 0 and "--chat-template" in p.stderr, f"a bad --chat-template is refused: {p.stderr}")

    fast = tokenizers.Tokenizer.from_file(os.path.join(MODEL, "tokenizer.json"))
    auto = transformers.AutoTokenizer.from_pretrained(MODEL)
    texts = corpus()
    ours = moe_tokenize(texts)
    ours_bos = moe_tokenize(texts, "--bos")
    ours_text = moe_tokenize(ours, "--decode")
    bad_fast = bad_auto = bad_bos = bad_decode = 0
    for text, ids, ids_bos, decoded in zip(texts, ours, ours_bos, ours_text):
        if fast.encode(text, add_special_tokens=False).ids != ids:
            bad_fast += 1
            if bad_fast <= 3:
                print(f"  tokenizers differs on {text[:60]!r}: {fast.encode(text, add_special_tokens=False).ids[:12]} "
                      f"vs ours {ids[:12]}")
        bad_auto += auto(text, add_special_tokens=False).input_ids != ids
        bad_bos += auto(text).input_ids != ids_bos
        # "▁" is how SentencePiece spells a space: typed in the text, it decodes as one.
        bad_decode += auto.decode(ids) != decoded or decoded != text.replace("\u2581", " ")
    n = len(texts)
    check(bad_fast == 0, f"tokenizers gives our ids for {n - bad_fast} of {n} texts")
    check(bad_auto == 0, f"AutoTokenizer gives our ids for {n - bad_auto} of {n} texts")
    check(bad_bos == 0, f"AutoTokenizer with special tokens gives our BOS-first ids for {n - bad_bos} of {n} texts")
    check(bad_decode == 0, f"AutoTokenizer decodes our ids to our text (the text, '\u2581' as a space) for "
                           f"{n - bad_decode} of {n}")
    print(f"{n} texts, {sum(map(len, ours))} tokens compared")

    special = "x <s> y"
    check(moe_tokenize([special])[0] != auto(special, add_special_tokens=False).input_ids
          and 1 in auto(special, add_special_tokens=False).input_ids and 1 not in moe_tokenize([special])[0],
          "the documented difference: '<s>' in text is BOS to Hugging Face, text to the server")

    with open(os.path.join(SRC, "tests/golden/chat/mistral_v1.json")) as f:
        golden = json.load(f)
    for case in golden["cases"]:
        if any("</s>" in m["content"] or "<s>" in m["content"] for m in case["messages"]):
            continue  # the difference above: the server keeps a control token typed in a message as text
        got = auto.apply_chat_template(case["messages"], tokenize=True)
        got = got["input_ids"] if isinstance(got, dict) or hasattr(got, "keys") else got
        check(list(got) == case["ids"], f"apply_chat_template of {case['messages']} gives the golden ids")
    print(f"{passed} passed, {len(failures)} failed")
    sys.exit(1 if failures else 0)


main()
