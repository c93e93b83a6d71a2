"""Token classes of Python source for the routing study: every token of a text is whitespace
(indentation and line breaks), a keyword, an identifier, punctuation (operators, brackets, quotes),
digits, or prose (a word inside a comment or a string: docstrings, messages).

The tokenizer's pieces are read straight from tokenizer.model (a SentencePiece ModelProto) with a
protobuf wire format (protobuf_wire.py), so no sentencepiece package is needed. Classes need
context: a piece "if" is a keyword in `if x:` and prose in `# if so`, and "in" inside `index` is
an identifier. So a sequence's pieces are joined back into its text, a small Python lexer (tolerant
of text cut anywhere: prompts are truncated files, continuations are a model's) marks comments and
strings, and each piece is classified by the characters it covers and the word around them.
"""
import keyword

from protobuf_wire import fields

CLASSES = ("whitespace", "keyword", "identifier", "punctuation", "digits", "prose", "special")
_KEYWORDS = frozenset(keyword.kwlist) | frozenset(getattr(keyword, "softkwlist", ()))


# ----------------------------------------------------------------------------------------------
# tokenizer.model


def piece_texts(tokenizer_path):
    """Each token id's text as it appears in decoded output: '▁' as a space, byte pieces
    <0xNN> as that byte (as a Latin-1 character: classes only need to know it is not ASCII
    text), control pieces (<unk>, <s>, </s>) as None."""
    with open(tokenizer_path, "rb") as f:
        buf = f.read()
    texts = []
    for field, wire, value, _, _ in fields(buf, tokenizer_path):
        if field != 1 or wire != 2:  # ModelProto.pieces
            continue
        piece, kind = "", 1
        for f2, w2, v2, _, _ in fields(value, tokenizer_path):
            if f2 == 1 and w2 == 2:
                piece = v2.decode("utf-8")
            elif f2 == 3 and w2 == 0:
                kind = v2  # 1 normal, 2 unknown, 3 control, 4 user defined, 6 byte
        if kind in (2, 3):
            texts.append(None)
        elif kind == 6:
            texts.append(chr(int(piece[3:-1], 16)))
        else:
            texts.append(piece.replace("\u2581", " "))
    if not texts:
        raise ValueError(f"{tokenizer_path}: no pieces (not a SentencePiece model?)")
    return texts


# ----------------------------------------------------------------------------------------------
# Lexing and classification


def prose_mask(text):
    """Per character: True inside a comment or a string literal (quotes excluded), for Python
    source that may be cut anywhere. Strings: '', "", triple-quoted, with backslash escapes."""
    mask = bytearray(len(text))
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "#":
            j = text.find("\n", i)
            j = n if j < 0 else j
            mask[i + 1:j] = b"\x01" * (j - i - 1)
            i = j
        elif c in "'\"":
            quote = text[i:i + 3] if text[i:i + 3] in ("'''", '"""') else c
            j = i + len(quote)
            start = j
            while j < n:
                if text[j] == "\\":
                    j += 2
                    continue
                if text.startswith(quote, j) or (len(quote) == 1 and text[j] == "\n"):
                    break
                j += 1
            j = min(j, n)
            mask[start:j] = b"\x01" * (j - start)
            i = j + (len(quote) if text.startswith(quote, j) else 0)
        else:
            i += 1
    return mask


def _is_word_char(ch):
    return ch.isalnum() or ch == "_"


def classify(text, spans):
    """Class index (into CLASSES) of each (start, end) span of `text`; a span of None is special."""
    mask = prose_mask(text)
    out = []
    for span in spans:
        if span is None:
            out.append(CLASSES.index("special"))
            continue
        s, e = span
        piece = text[s:e]
        core = piece.strip()
        if not core:
            out.append(CLASSES.index("whitespace"))
            continue
        if core.isdigit():
            out.append(CLASSES.index("digits"))
            continue
        first = s + (len(piece) - len(piece.lstrip()))  # the first non-space character
        letters = any(ch.isalpha() for ch in core)
        if mask[first]:
            out.append(CLASSES.index("prose" if letters else "punctuation"))
            continue
        if not (letters or "_" in core):
            out.append(CLASSES.index("punctuation"))
            continue
        # The whole word this piece is part of decides keyword or identifier.
        a = next((i for i in range(first, e) if _is_word_char(text[i])), first)
        lo, hi = a, a
        while lo > 0 and _is_word_char(text[lo - 1]):
            lo -= 1
        while hi < len(text) and _is_word_char(text[hi]):
            hi += 1
        out.append(CLASSES.index("keyword" if text[lo:hi] in _KEYWORDS else "identifier"))
    return out


def classify_sequence(token_ids, pieces):
    """Classes of one sequence's tokens (in position order), from the tokenizer's pieces."""
    parts, spans, at = [], [], 0
    for t in token_ids:
        p = pieces[t] if 0 <= t < len(pieces) else None
        if p is None:
            spans.append(None)
            continue
        parts.append(p)
        spans.append((at, at + len(p)))
        at += len(p)
    return classify("".join(parts), spans)
