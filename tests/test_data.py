"""Tests for moe_studio.data: tokenizer, corpora, batches."""
from __future__ import annotations

import json
import os
import string
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from moe_studio.data import (CUSTOM_PROBE_NAME, PROBE_MAX_TOKENS, TOKEN_CLASSES, BatchSampler,
                             ByteTokenizer, CorpusError, bootstrap_starts, eval_windows,
                             load_corpus, token_class, token_classes, window_starts)
from moe_studio.data import corpus as corpus_mod

TOK = ByteTokenizer()
MULTILINGUAL = ("Hello, world! Grüße aus Köln. Ελληνικά. Русский текст. 日本語のテキスト。"
                "עברית. العربية. 한국어. emoji: 🙂 👩‍👩‍👧 🇫🇷 e\u0301 ∑x² ≤ ∞\n\ttab")
# ../shared/data next to the checkout (where the project keeps its public-domain corpus)
TINY_SHAKESPEARE = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"


# ------------------------------------------------------------------------- tokenizer

def test_round_trip_multilingual_and_emoji():
    ids = TOK.encode(MULTILINGUAL)
    assert ids.dtype == np.uint8 and ids.ndim == 1
    assert ids.tobytes() == MULTILINGUAL.encode("utf-8")
    assert TOK.decode(ids) == MULTILINGUAL
    assert TOK.decode(ids.astype(np.int64).tolist()) == MULTILINGUAL
    assert TOK.vocab_size == 256
    assert len(TOK.encode("🙂")) == 4


def test_decode_replaces_invalid_utf8_and_rejects_out_of_range():
    assert TOK.decode([0x61, 0xC3]) == "a\ufffd"  # a character cut in half
    with pytest.raises(ValueError):
        TOK.decode([300])


def test_token_labels():
    ids = TOK.encode("a b\n\t\x01~é")
    assert TOK.token_labels(ids) == ["a", "␣", "b", "↵", "⇥", "\\x01", "~", "\\xc3", "\\xa9"]
    labels = TOK.token_labels(np.arange(256))
    assert len(labels) == 256 and all(0 < len(s) <= 4 and s.isprintable() for s in labels)


def _reference_class(b: int) -> str:
    """Per-character reference, written from the definition, not from the table."""
    if b >= 0x80:
        return "other"
    ch = chr(b)
    if ch.isascii() and ch.isalpha():
        return "letter"
    if ch.isdigit():
        return "digit"
    if ch in string.whitespace:
        return "whitespace"
    if ch in "{}[]()<>=+-*/%&|^~_#@\\`":
        return "code symbol"
    if ch in string.punctuation:
        return "punctuation"
    return "other"


def test_token_classes_match_reference():
    got = token_classes(np.arange(256))
    assert got.dtype == np.int8
    for b in range(256):
        assert TOKEN_CLASSES[got[b]] == _reference_class(b), (b, chr(b))
        assert token_class(b) == _reference_class(b)
    # shape is kept, and a real text gets the classes of its characters
    ids = TOK.encode("x = f(1);\nY!")
    grid = token_classes(ids.reshape(3, 4))
    assert grid.shape == (3, 4)
    assert [TOKEN_CLASSES[c] for c in grid.ravel()] == [_reference_class(b) for b in ids]
    assert {token_class(ord(c)) for c in ".,;:!?'\""} == {"punctuation"}


def test_char_spans_map_each_byte_to_its_character():
    ids = TOK.encode(MULTILINGUAL)
    spans = TOK.char_spans(MULTILINGUAL)
    assert len(spans) == len(ids)
    for i, (c, k) in enumerate(spans):
        assert MULTILINGUAL[c].encode("utf-8")[k] == ids[i]
    firsts = [c for c, k in spans if k == 0]
    assert firsts == list(range(len(MULTILINGUAL)))


# --------------------------------------------------------------------------- corpora

@pytest.fixture(scope="module")
def embedded():
    return load_corpus("embedded", context=64)


def test_embedded_corpus_has_balanced_domains(embedded):
    assert embedded.domain_names == ["prose", "python"]
    tr, va = embedded.domain_sizes("train"), embedded.domain_sizes("val")
    assert (tr > 200_000).all() and (va > 20_000).all()
    assert 0.5 < tr[0] / tr[1] < 2.0
    for arr in (embedded.train_tokens, embedded.train_domains, embedded.val_tokens,
                embedded.val_domains, embedded.probe_tokens, embedded.probe_domains):
        assert arr.dtype == np.uint8
    assert "prose" in embedded.describe() and "\n" not in embedded.describe()


def test_embedded_corpus_is_deterministic(embedded):
    corpus_mod._embedded_domains.cache_clear()  # rebuild from the installation's files
    again = load_corpus("embedded", context=64)
    for f in ("train_tokens", "train_domains", "val_tokens", "val_domains",
              "probe_tokens", "probe_domains"):
        np.testing.assert_array_equal(getattr(embedded, f), getattr(again, f))
    assert again.probe_text == embedded.probe_text
    assert again.domain_names == embedded.domain_names


def test_embedded_labels_align_with_text(embedded):
    from pydoc_data.topics import topics

    d = embedded.train_domains
    assert (np.diff(d.astype(int)) >= 0).all()  # domains are contiguous, in order
    prose = embedded.train_tokens[d == 0].tobytes()
    python = embedded.train_tokens[d == 1].tobytes().decode("utf-8", errors="replace")
    first_topic = topics[sorted(topics)[0]].encode("utf-8")
    assert prose.startswith(first_topic[:2000])
    assert "def " in python and "import " in python and "return" in python
    assert "def " not in prose.decode("utf-8")[:2000]


def _write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, str):
        text = text.encode("utf-8")
    path.write_bytes(text)
    return path


def _lines(word: str, n: int) -> str:
    return "".join(f"{word} line {i}: some text here.\n" for i in range(n))


def test_file_corpus(tmp_path):
    text = _lines("alpha", 200) + "ünïcödé 🙂\n"
    f = _write(tmp_path / "notes.txt", text)
    c = load_corpus(str(f), context=32, val_fraction=0.2)
    assert c.name == "notes" and c.domain_names == ["notes"]
    data = text.encode("utf-8")
    n_val = round(len(data) * 0.2)
    assert len(c.val_tokens) == n_val
    assert c.train_tokens.tobytes() + c.val_tokens.tobytes() == data
    assert (c.train_domains == 0).all() and (c.val_domains == 0).all()


def test_folder_corpus_domains_labels_and_split(tmp_path):
    root = tmp_path / "corpus"
    texts = {"a": _lines("aaa", 100), "b": _lines("bbb", 300)}
    _write(root / "a.txt", texts["a"])
    _write(root / "b.md", texts["b"])
    _write(root / "code" / "x.py", _lines("x = 1 #", 80))
    _write(root / "code" / "pkg" / "y.py", _lines("y = 2 #", 80))
    _write(root / "code" / "pkg" / "__init__.py", "")  # empty files in a subfolder: skipped
    _write(root / ".hidden.txt", _lines("secret", 50))
    _write(root / "code" / ".git" / "HEAD", b"\x00binary")  # hidden: never read
    texts["code"] = _lines("y = 2 #", 80) + _lines("x = 1 #", 80)  # sorted: pkg/y.py < x.py

    for vf in (0.1, 0.25):
        c = load_corpus(str(root), context=16, val_fraction=vf)
        assert c.name == "corpus" and c.domain_names == ["a", "b", "code"]
        for i, name in enumerate(c.domain_names):
            data = texts[name].encode("utf-8")
            n_val = round(len(data) * vf)
            assert c.val_tokens[c.val_domains == i].tobytes() == data[len(data) - n_val:]
            assert c.train_tokens[c.train_domains == i].tobytes() == data[:len(data) - n_val]
        assert (np.diff(c.train_domains.astype(int)) >= 0).all()


def test_default_probe_has_one_passage_per_domain(tmp_path):
    root = tmp_path / "c"
    _write(root / "a.txt", _lines("apple", 200))
    _write(root / "b.txt", _lines("berry", 200))
    c = load_corpus(str(root), context=16)
    assert len(c.probe_tokens) <= PROBE_MAX_TOKENS
    assert c.probe_domain_names == c.domain_names
    assert list(np.unique(c.probe_domains)) == [0, 1]
    assert (np.diff(c.probe_domains.astype(int)) >= 0).all()
    assert TOK.decode(c.probe_tokens) == c.probe_text
    for i, word in enumerate(["apple", "berry"]):
        passage = c.probe_tokens[c.probe_domains == i].tobytes()
        assert 100 <= len(passage) <= 256
        assert passage.startswith(word.encode()) and passage.endswith(b"\n")  # whole lines
        assert passage in c.val_tokens[c.val_domains == i].tobytes()


def test_custom_probe_is_labelled_custom_and_capped(embedded):
    c = load_corpus("embedded", context=64, probe_text="def f(x):\n    return x  # héllo")
    custom = len(c.domain_names)
    assert c.probe_domain_names == c.domain_names + [CUSTOM_PROBE_NAME]
    assert (c.probe_domains == custom).all()
    assert c.probe_text == "def f(x):\n    return x  # héllo"
    assert (c.train_domains < custom).all() and (c.val_domains < custom).all()

    long = load_corpus("embedded", context=64, probe_text="é" * 3000)  # 6000 bytes
    assert len(long.probe_tokens) == PROBE_MAX_TOKENS
    assert long.probe_text == "é" * (PROBE_MAX_TOKENS // 2)


# --------------------------------------------------------------------------- errors

def _error(spec, **kw) -> str:
    kw.setdefault("context", 16)
    with pytest.raises(CorpusError) as info:
        load_corpus(str(spec), **kw)
    return str(info.value)


def test_missing_path(tmp_path):
    msg = _error(tmp_path / "nope.txt")
    assert "nope.txt" in msg and "does not exist" in msg


def test_empty_spec():
    with pytest.raises(CorpusError, match="data.corpus is empty"):
        load_corpus("  ", context=16)


def test_empty_and_whitespace_files(tmp_path):
    msg = _error(_write(tmp_path / "empty.txt", b""))
    assert "empty.txt" in msg and "empty (0 bytes)" in msg
    msg = _error(_write(tmp_path / "blank.txt", " \n\t\n  "))
    assert "blank.txt" in msg and "only whitespace" in msg


def test_undecodable_bytes_report_offset(tmp_path):
    data = b"hello\nworld " + b"\xff\xfe" + b" more text\n" * 50
    msg = _error(_write(tmp_path / "latin.txt", data))
    assert "latin.txt" in msg and "not UTF-8" in msg
    assert "byte offset 12" in msg and "line 2" in msg and "0xff" in msg


def test_binary_file(tmp_path):
    msg = _error(_write(tmp_path / "blob.bin", b"abc" * 100 + b"\x00\x01\x02"))
    assert "blob.bin" in msg and "NUL" in msg and "byte offset 300" in msg and "binary" in msg


def test_folder_without_usable_files(tmp_path):
    root = tmp_path / "only_hidden"
    _write(root / ".DS_Store", b"x")
    msg = _error(root)
    assert "only_hidden" in msg and "no usable files" in msg
    sub = tmp_path / "emptysub"
    _write(sub / "a.txt", _lines("a", 100))
    _write(sub / "docs" / "empty.txt", b"")
    msg = _error(sub)
    assert str(sub / "docs") in msg and "no non-empty text files" in msg


def test_binary_file_inside_folder_is_named(tmp_path):
    root = tmp_path / "mixed"
    _write(root / "a.txt", _lines("a", 100))
    _write(root / "src" / "image.png", b"\x89PNG\x00\x00")
    msg = _error(root)
    assert "image.png" in msg and "NUL" in msg


def test_too_short_for_context(tmp_path):
    # 400 bytes: 40 of validation at val_fraction 0.1
    f = _write(tmp_path / "short.txt", ("abcdefghi\n" * 40))
    msg = _error(f, context=64)
    assert "short.txt" in msg
    assert "has 40 tokens of validation text but data.context is 64" in msg
    assert "lower data.context / raise data.val_fraction" in msg

    assert len(load_corpus(str(f), context=64, val_fraction=0.5).val_tokens) == 200  # fits
    msg = _error(f, context=300, val_fraction=0.5)
    assert "has 200 tokens of validation text but data.context is 300" in msg

    msg = _error(f, context=500)
    assert "short.txt" in msg and "has 400 tokens but data.context is 500" in msg

    msg = _error(f, context=16, val_fraction=0.96)
    assert "has 16 tokens of training text but data.context is 16" in msg

    root = tmp_path / "two"
    _write(root / "big.txt", _lines("big", 200))
    _write(root / "tiny.txt", "x" * 100 + "\n")
    msg = _error(root, context=16)
    assert "tiny.txt" in msg and "domain 'tiny'" in msg and "validation text" in msg


# --------------------------------------------------------------------------- batches

TOKENS = (np.arange(5000) % 251).astype(np.uint8)  # next token = (token + 1) % 251


def test_window_starts():
    s = window_starts(100, 10)
    assert s.dtype == np.int64 and len(s) == 90 and s[0] == 0 and s[-1] == 89
    assert len(window_starts(10, 10)) == 0 and len(window_starts(11, 10)) == 1


def test_batch_sampler_shapes_shift_and_determinism():
    a = BatchSampler(TOKENS, context=32, batch_size=8, seed=3)
    b = BatchSampler(TOKENS, context=32, batch_size=8, seed=3)
    c = BatchSampler(TOKENS, context=32, batch_size=8, seed=4)
    xa, ya = a.next()
    xb, yb = b.next()
    xc, _ = c.next()
    assert xa.shape == ya.shape == (8, 32) and xa.dtype == ya.dtype == np.int64
    np.testing.assert_array_equal(xa, xb)
    np.testing.assert_array_equal(ya, yb)
    assert not np.array_equal(xa, xc)
    np.testing.assert_array_equal(ya, (xa + 1) % 251)  # y is x one token later
    np.testing.assert_array_equal(xa[:, 1:], ya[:, :-1])


def test_batch_sampler_state_round_trip_continues_stream():
    a = BatchSampler(TOKENS, context=16, batch_size=4, seed=7)
    for _ in range(3):
        a.next()
    state = json.loads(json.dumps(a.state_dict()))
    expected = [a.next() for _ in range(5)]
    b = BatchSampler(TOKENS, context=16, batch_size=4, seed=99)
    b.load_state_dict(state)
    for (xe, ye), (xg, yg) in zip(expected, [b.next() for _ in range(5)]):
        np.testing.assert_array_equal(xe, xg)
        np.testing.assert_array_equal(ye, yg)
    other = BatchSampler(TOKENS, context=32, batch_size=4, seed=7)
    with pytest.raises(ValueError, match="context"):
        other.load_state_dict(state)


def test_batch_sampler_draws_only_given_starts():
    s = BatchSampler(TOKENS, context=8, batch_size=16, seed=0, starts=np.array([5, 700]))
    x, _ = s.next()
    assert set(x[:, 0].tolist()) <= {5, 700 % 251}


def test_bootstrap_starts():
    a = bootstrap_starts(2000, 32, seed=1)
    assert len(a) == len(window_starts(2000, 32)) and a.dtype == np.int64
    np.testing.assert_array_equal(a, bootstrap_starts(2000, 32, seed=1))
    assert not np.array_equal(a, bootstrap_starts(2000, 32, seed=2))
    assert a.min() >= 0 and a.max() <= 2000 - 33
    assert len(np.unique(a)) < len(a)  # with replacement: some windows repeat


def test_eval_windows_cover_text_deterministically():
    domains = (np.arange(len(TOKENS)) >= 2500).astype(np.uint8)
    w = eval_windows(TOKENS, context=16, batch_size=4, n_batches=3)
    assert len(w) == 3 and all(x.shape == y.shape == (4, 16) for x, y in w)
    first, last = w[0][0][0], w[-1][1][-1]
    np.testing.assert_array_equal(first, TOKENS[:16])  # starts at the first token
    np.testing.assert_array_equal(last, TOKENS[-16:])  # ends at the last token
    again = eval_windows(TOKENS, context=16, batch_size=4, n_batches=3)
    assert all(np.array_equal(p[0], q[0]) for p, q in zip(w, again))
    wd = eval_windows(TOKENS, context=16, batch_size=4, n_batches=3, domains=domains)
    for (x, _), (x2, _, d) in zip(w, wd):
        np.testing.assert_array_equal(x, x2)
        assert d.shape == x.shape
    assert wd[0][2][0, 0] == 0 and wd[-1][2][-1, -1] == 1


# ------------------------------------------------------------------------ real files

@pytest.mark.skipif(not TINY_SHAKESPEARE.exists(), reason="shared tinyshakespeare absent")
def test_tinyshakespeare_file_corpus():
    c = load_corpus(str(TINY_SHAKESPEARE), context=256)
    assert c.domain_names == ["tinyshakespeare"]
    assert len(c.train_tokens) + len(c.val_tokens) == TINY_SHAKESPEARE.stat().st_size
    assert len(c.val_tokens) == round(TINY_SHAKESPEARE.stat().st_size * 0.1)
    assert 0 < len(c.probe_tokens) <= 256


def test_data_package_imports_only_numpy():
    code = ("import sys, moe_studio.data; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'PySide6', 'pandas')]; "
            "assert not bad, bad")
    root = str(Path(__file__).resolve().parents[1])
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root,
                   env={**os.environ, "PYTHONPATH": root})
