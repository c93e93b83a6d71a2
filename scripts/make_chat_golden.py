#!/usr/bin/env python3
"""Writes tests/golden/chat/mistral_v1.json: conversations, the prompt text Hugging Face
transformers' apply_chat_template renders from Mixtral-8x7B-Instruct-v0.1's chat template (Mistral's
"v1" template, verbatim below), and its token ids.

The ids are what Hugging Face's tokenizers make of that text: special tokens (<s>, </s>) split out
first, then each text span between them encoded by SentencePiece with its dummy-prefix space
(legacy Llama tokenization, which Mixtral's tokenizer uses). transformers renders; sentencepiece
encodes, since this transformers cannot build a Llama tokenizer from tokenizer.model alone.

usage: V/bin/python scripts/make_chat_golden.py   (V: the venv of scripts/train_demo_model.py)
"""
import json
import os
import re

import sentencepiece
import transformers
from transformers import LlamaTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, "core/model/tokenizer/tokenizer.model")
OUT = os.path.join(ROOT, "tests/golden/chat/mistral_v1.json")

# Mixtral-8x7B-Instruct-v0.1's tokenizer_config.json "chat_template" (Mistral's v1 template).
TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}\n    {%- set system_message = messages[0]['content'] %}\n"
    "    {%- set loop_messages = messages[1:] %}\n{%- else %}\n    {%- set loop_messages = messages %}\n{%- endif %}\n\n"
    "{{- bos_token }}\n{%- for message in loop_messages %}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}\n"
    "        {{- raise_exception('After the optional system message, conversation roles must alternate "
    "user/assistant/user/assistant/...') }}\n    {%- endif %}\n    {%- if message['role'] == 'user' %}\n"
    "        {%- if loop.first and system_message is defined %}\n"
    "            {{- ' [INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}\n"
    "        {%- else %}\n            {{- ' [INST] ' + message['content'] + ' [/INST]' }}\n        {%- endif %}\n"
    "    {%- elif message['role'] == 'assistant' %}\n        {{- ' ' + message['content'] + eos_token}}\n"
    "    {%- else %}\n        {{- raise_exception('Only user and assistant roles are supported, with the exception "
    "of an initial optional system message!') }}\n    {%- endif %}\n{%- endfor %}\n")

CONVERSATIONS = [
    [{"role": "user", "content": "Hello"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Who are you?"}],
    [{"role": "user", "content": "Write a haiku"}, {"role": "assistant", "content": "Leaves fall,\nquietly."},
     {"role": "user", "content": "Another, about the sea"}],
    [{"role": "system", "content": "You write Python."}, {"role": "user", "content": "def fib(n):"},
     {"role": "assistant", "content": "    return n if n < 2 else fib(n - 1) + fib(n - 2)"},
     {"role": "user", "content": "  now iteratively  "}],
    [{"role": "user", "content": "unicode: naïve café — 日本語 🙂 and a literal </s> and [INST]"}],
]


def main():
    tok = LlamaTokenizer(vocab_file=MODEL, legacy=True)  # renders the template; bos/eos are <s>, </s>
    sp = sentencepiece.SentencePieceProcessor(model_file=MODEL)
    cases = []
    for messages in CONVERSATIONS:
        text = tok.apply_chat_template(messages, chat_template=TEMPLATE, tokenize=False)
        ids = []
        # Special tokens of the template only: a user's literal "</s>" inside content is text to us
        # (Hugging Face would read it as EOS: a prompt injection we do not reproduce), so the golden
        # splits at the template's own markers, which the cases place only where the template does.
        for piece in re.split(r"(<s>|</s>)", text):
            if piece == "<s>":
                ids.append(sp.bos_id())
            elif piece == "</s>":
                ids.append(sp.eos_id())
            elif piece:
                ids.extend(sp.encode(piece))
        cases.append({"messages": messages, "text": text, "ids": ids})
    # The literal "</s>" case: recompute its ids with the content's "</s>" as text.
    last = cases[-1]
    content = last["messages"][0]["content"]
    last["ids"] = [sp.bos_id()] + sp.encode(f" [INST] {content} [/INST]")
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump({"template": TEMPLATE, "made_by": f"transformers {transformers.__version__}, sentencepiece "
                   f"{sentencepiece.__version__}", "cases": cases}, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"wrote {OUT}: {len(cases)} conversations")


if __name__ == "__main__":
    main()
