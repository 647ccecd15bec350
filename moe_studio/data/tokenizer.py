"""Byte-level tokenizer: one token per UTF-8 byte (vocabulary 256).

Bytes keep the model small and let any text in any language through without an
out-of-vocabulary token. The price is that one character may be several tokens
(``é`` is two, most emoji four), so views that colour *characters* by routing use
:meth:`ByteTokenizer.char_spans` to find each character's first byte.

The token classes (letter, digit, whitespace, punctuation, code symbol, other) let
dashboards ask "does an expert specialise in code symbols?" without a real lexer.
"""
from __future__ import annotations

import numpy as np

VOCAB_SIZE = 256

TOKEN_CLASSES = ("letter", "digit", "whitespace", "punctuation", "code symbol", "other")

# Characters rare in prose but common in source code. Ordinary punctuation is what
# prose uses too; every other printable ASCII byte falls into one of the two sets.
CODE_SYMBOLS = "{}[]()<>=+-*/%&|^~_#@\\`"
PUNCTUATION = ".,;:!?'\"$"
WHITESPACE = " \t\n\r\x0b\x0c"


def _build_class_table() -> np.ndarray:
    table = np.full(VOCAB_SIZE, TOKEN_CLASSES.index("other"), dtype=np.int8)
    for b in range(0x80):  # bytes >= 0x80 are parts of non-ASCII characters: 'other'
        c = chr(b)
        if "a" <= c <= "z" or "A" <= c <= "Z":
            name = "letter"
        elif "0" <= c <= "9":
            name = "digit"
        elif c in WHITESPACE:
            name = "whitespace"
        elif c in CODE_SYMBOLS:
            name = "code symbol"
        elif c in PUNCTUATION:
            name = "punctuation"
        else:
            continue  # other control bytes and DEL
        table[b] = TOKEN_CLASSES.index(name)
    return table


def _build_label_table() -> tuple[str, ...]:
    special = {ord(" "): "␣", ord("\n"): "↵", ord("\t"): "⇥"}
    labels = []
    for b in range(VOCAB_SIZE):
        if b in special:
            labels.append(special[b])
        elif 0x21 <= b <= 0x7E:
            labels.append(chr(b))
        else:
            labels.append(f"\\x{b:02x}")
    return tuple(labels)


_CLASS_TABLE = _build_class_table()
_CLASS_TABLE.setflags(write=False)
_LABELS = _build_label_table()


def token_class(byte: int) -> str:
    """The class name (one of :data:`TOKEN_CLASSES`) of one byte token 0..255."""
    if not 0 <= int(byte) < VOCAB_SIZE:
        raise ValueError(f"byte token must be in 0..255, got {byte}")
    return TOKEN_CLASSES[_CLASS_TABLE[int(byte)]]


def token_classes(ids) -> np.ndarray:
    """Class index into :data:`TOKEN_CLASSES` for every token.

    ``ids``: integer array-like of byte tokens 0..255, any shape.
    Returns int8 array of the same shape.
    """
    arr = _as_byte_ids(ids)
    return _CLASS_TABLE[arr]


def _as_byte_ids(ids) -> np.ndarray:
    arr = np.asarray(ids)
    if arr.dtype == np.uint8:
        return arr
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"token ids must be integers, got dtype {arr.dtype}")
    if arr.size and (arr.min() < 0 or arr.max() >= VOCAB_SIZE):
        raise ValueError(f"token ids must be in 0..255, got range "
                         f"{int(arr.min())}..{int(arr.max())}")
    return arr.astype(np.uint8)


class ByteTokenizer:
    """UTF-8 bytes as tokens. Stateless; ``vocab_size`` is 256."""

    vocab_size = VOCAB_SIZE

    def encode(self, text: str) -> np.ndarray:
        """The UTF-8 bytes of ``text`` as a writable uint8 array [n_bytes].

        Raises ``UnicodeEncodeError`` for lone surrogates, which are not text.
        """
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).copy()

    def decode(self, ids) -> str:
        """Text from byte tokens (any integer array-like of 0..255, flattened).

        Invalid UTF-8 (for example a sequence cut inside a character, or bytes a
        model generated) becomes U+FFFD rather than an error.
        """
        return _as_byte_ids(ids).reshape(-1).tobytes().decode("utf-8", errors="replace")

    def token_labels(self, ids) -> list[str]:
        """A short printable label per token for plot axes.

        Printable ASCII is itself; space ``␣``, newline ``↵``, tab ``⇥``; other
        control bytes and bytes >= 0x80 as hex such as ``\\xc3``.
        """
        return [_LABELS[b] for b in _as_byte_ids(ids).reshape(-1).tolist()]

    def char_spans(self, text: str) -> list[tuple[int, int]]:
        """For each token of ``encode(text)``: ``(char_index, byte_in_char)``.

        ``char_index`` is the index into ``text`` (a Python ``str``, so one code
        point per index) of the character the byte belongs to, and ``byte_in_char``
        its position inside that character's UTF-8 encoding (0 = first byte). A text
        view colours character ``c`` by the token ``i`` with ``spans[i] == (c, 0)``.
        Length = number of tokens.
        """
        spans: list[tuple[int, int]] = []
        for ci, ch in enumerate(text):
            n = len(ch.encode("utf-8"))
            spans.extend((ci, k) for k in range(n))
        return spans
