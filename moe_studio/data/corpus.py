"""Training corpora: the embedded default, a text file, or a folder of domains.

A corpus is a list of *domains* (named runs of UTF-8 text: "prose", "python", one per
file or subfolder). Each token carries the index of its domain, so dashboards can ask
whether experts specialise by domain. The split is deterministic: the last
``val_fraction`` of every domain is validation, the rest training, and the domains
are concatenated in order.

The embedded corpus is built only from text every Python installation carries:

* ``prose``: the English help topics of ``pydoc_data.topics`` (what ``help("if")``
  shows), in sorted-key order;
* ``python``: the source of a fixed list of pure-Python standard-library modules,
  each contributing an equal share (cut at a line end), trimmed to the same byte
  count as ``prose`` so neither domain dominates the batch stream.

Probe text (the passage routed through the model for the routing heatmaps) is either a
fixed sample of one passage per domain taken from the validation parts, or the user's
text. User text gets its own label: ``probe_domains`` then holds
``len(domain_names)`` and ``probe_domain_names`` is ``domain_names + ["custom"]``; the
training and validation labels never use that index. Readers of a probe should
always name domains through ``probe_domain_names``.
"""
from __future__ import annotations

import functools
import importlib.util
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

EMBEDDED = "embedded"
PROBE_MAX_TOKENS = 4096       # cap on probe length (tokens = bytes)
PROBE_PASSAGE_BYTES = 256     # default probe: about this many bytes per domain
CUSTOM_PROBE_NAME = "custom"  # domain name of user-supplied probe text
MAX_DOMAINS = 255             # domain labels are uint8 and the probe may need one more
EMBEDDED_DOMAIN_CAP = 1_500_000  # bytes per embedded domain at most

# Pure-Python modules present (as .py files, not frozen or C) in CPython 3.10-3.13,
# sorted. A missing one is skipped, so an unusual installation still builds a corpus.
EMBEDDED_PYTHON_MODULES = (
    "argparse", "ast", "base64", "bisect", "calendar", "colorsys", "configparser",
    "contextlib", "copy", "csv", "dataclasses", "difflib", "enum", "fnmatch",
    "fractions", "functools", "gettext", "glob", "heapq", "inspect", "ipaddress",
    "json", "keyword", "linecache", "numbers", "operator", "pprint", "queue",
    "random", "shlex", "shutil", "statistics", "string", "textwrap", "threading",
    "tokenize", "traceback", "typing", "uuid", "weakref",
)


class CorpusError(ValueError):
    """A corpus that cannot be used. The message names the file and what to do."""

    def __init__(self, message: str, path: str | Path | None = None):
        super().__init__(message)
        self.path = None if path is None else str(path)


@dataclass(eq=False)  # arrays make field-wise == ambiguous; compare fields explicitly
class Corpus:
    """A split, labelled corpus. All token arrays are uint8 bytes [n_tokens];
    ``*_domains[i]`` is the uint8 domain index of token ``i``."""

    name: str
    domain_names: list[str]
    train_tokens: np.ndarray
    train_domains: np.ndarray
    val_tokens: np.ndarray
    val_domains: np.ndarray
    probe_tokens: np.ndarray
    probe_domains: np.ndarray
    probe_text: str
    # Names for probe_domains: domain_names, plus CUSTOM_PROBE_NAME for user text.
    probe_domain_names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.probe_domain_names:
            self.probe_domain_names = list(self.domain_names)

    def domain_sizes(self, split: str = "train") -> np.ndarray:
        """Tokens per domain in ``split`` ('train' or 'val'), int64 [n_domains]."""
        d = {"train": self.train_domains, "val": self.val_domains}[split]
        return np.bincount(d, minlength=len(self.domain_names)).astype(np.int64)

    def describe(self) -> str:
        """One line: the corpus name, each domain's train/val tokens, the probe size."""
        tr, va = self.domain_sizes("train"), self.domain_sizes("val")
        parts = [f"{n} {t:,}/{v:,}" for n, t, v in zip(self.domain_names, tr, va)]
        return (f"{self.name}: {len(self.domain_names)} domain"
                f"{'s' if len(self.domain_names) != 1 else ''} (train/val tokens) "
                f"{', '.join(parts)}; total {len(self.train_tokens):,}/{len(self.val_tokens):,}; "
                f"probe {len(self.probe_tokens):,} tokens")


# --------------------------------------------------------------------------- loading

def load_corpus(spec: str, *, context: int, val_fraction: float = 0.1,
                probe_text: str = "") -> Corpus:
    """Load, split and label a corpus.

    ``spec``: ``"embedded"``, a UTF-8 text file (one domain named after the file
    stem) or a folder (each top-level file and each top-level subfolder is one
    domain, in sorted name order; hidden entries are skipped; a subfolder's files
    are concatenated in sorted path order, and empty files inside it are skipped).
    ``context``: tokens per training window; every domain's training and validation
    parts must hold at least ``context + 1`` tokens. ``val_fraction``: share of each
    domain (its last ``round(n * val_fraction)`` tokens) held out for validation.
    ``probe_text``: text for routing heatmaps; empty = one passage per domain.

    Raises :class:`CorpusError` with a message naming the file and the problem.
    """
    if context < 1:
        raise ValueError(f"context must be >= 1 token, got {context}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction}")

    name, sources = read_domains(spec)
    domain_names = [n for n, _, _ in sources]
    train, val = _split(sources, context, val_fraction)

    train_tokens, train_domains = _concat(train)
    val_tokens, val_domains = _concat(val)
    if probe_text.strip():
        probe_names = domain_names + [_unique(CUSTOM_PROBE_NAME, domain_names)]
        p_tokens, p_domains = _custom_probe(probe_text, len(domain_names))
    else:
        probe_names = list(domain_names)
        p_tokens, p_domains = _default_probe(sources, val)
    return Corpus(
        name=name, domain_names=domain_names,
        train_tokens=train_tokens, train_domains=train_domains,
        val_tokens=val_tokens, val_domains=val_domains,
        probe_tokens=p_tokens, probe_domains=p_domains,
        probe_text=p_tokens.tobytes().decode("utf-8"),
        probe_domain_names=probe_names,
    )


def read_domains(spec: str) -> tuple[str, list[tuple[str, bytes, str]]]:
    """``(corpus name, [(domain name, UTF-8 bytes, where it came from), ...])`` of a
    corpus ``spec`` ("embedded", a text file or a folder, as for :func:`load_corpus`),
    unsplit. Raises :class:`CorpusError`."""
    spec = spec.strip()
    if not spec:  # Path("") would silently mean the working folder
        raise CorpusError("data.corpus is empty: give 'embedded', a text file or a folder")
    if spec == EMBEDDED:
        return EMBEDDED, [(n, data, "embedded corpus") for n, data in _embedded_domains()]
    path = Path(spec).expanduser()
    if not path.exists():
        raise CorpusError(f"corpus path '{path}' does not exist: check data.corpus "
                          f"(or use 'embedded' for the built-in corpus)", path)
    if path.is_file():
        return path.stem, [(path.stem, _read_text_file(path), str(path))]
    if path.is_dir():
        return path.name, _folder_domains(path)
    raise CorpusError(f"corpus path '{path}' is neither a file nor a folder", path)


def probe_passages(sources: list[tuple[str, bytes, str]]) -> list[bytes]:
    """One passage per domain, as the default probe text takes it, from the second half
    of each domain (text a model trained on the first half has not seen)."""
    halves = [data[_char_boundary(data, len(data) // 2):] for _, data, _ in sources]
    return _probe_passages(sources, halves)


def _split(sources: list[tuple[str, bytes, str]], context: int,
           val_fraction: float) -> tuple[list[bytes], list[bytes]]:
    """Each domain's bytes split into (training part, validation part), checked to
    hold at least one window of ``context`` inputs plus the next-token target."""
    need = context + 1
    train, val = [], []
    for name, data, where in sources:
        n = len(data)
        n_val = int(round(n * val_fraction))
        what = (f"corpus file '{where}'" if len(sources) == 1 and where != "embedded corpus"
                else f"{where}: domain '{name}'")
        if n < need:
            raise CorpusError(f"{what} has {n} tokens but data.context is {context}: "
                              f"add text or lower data.context", where)
        if n_val < need:
            raise CorpusError(f"{what} has {n_val} tokens of validation text but data.context "
                              f"is {context}: add text or lower data.context / raise "
                              f"data.val_fraction", where)
        if n - n_val < need:
            raise CorpusError(f"{what} has {n - n_val} tokens of training text but "
                              f"data.context is {context}: add text or lower data.context / "
                              f"lower data.val_fraction", where)
        train.append(data[:n - n_val])
        val.append(data[n - n_val:])
    return train, val


def _concat(parts: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Domains' bytes -> (tokens uint8 [N], domain index uint8 [N])."""
    tokens = np.frombuffer(b"".join(parts), dtype=np.uint8).copy()
    domains = np.repeat(np.arange(len(parts), dtype=np.uint8), [len(p) for p in parts])
    return tokens, domains


def _unique(name: str, taken: list[str]) -> str:
    return name if name not in taken else f"{name} probe"


# ------------------------------------------------------------------- files and folders

def _read_text_file(path: Path, *, allow_empty: bool = False) -> bytes:
    """The UTF-8 bytes of a text file (a leading byte-order mark dropped).

    Empty or whitespace-only files raise, unless ``allow_empty`` (then b"" is returned).
    """
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise CorpusError(f"cannot read corpus file '{path}': {e.strerror or e}", path) from e
    if b"\x00" in raw:
        raise CorpusError(f"corpus file '{path}' contains NUL bytes (first at byte offset "
                          f"{raw.find(bytes(1))}): it looks like a binary file; corpora must "
                          f"be UTF-8 text", path)
    bom = 3 if raw.startswith(b"\xef\xbb\xbf") else 0  # editors add it; it is not text
    data = raw[bom:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        offset = bom + e.start
        line = raw.count(b"\n", 0, offset) + 1
        raise CorpusError(f"corpus file '{path}' is not UTF-8 text: undecodable byte "
                          f"0x{raw[offset]:02x} at byte offset {offset} (line {line}); "
                          f"re-save it as UTF-8", path) from None
    if not text.strip():
        if allow_empty:
            return b""
        kind = "is empty (0 bytes)" if not raw else "contains only whitespace"
        raise CorpusError(f"corpus file '{path}' {kind}: add text or remove it", path)
    return data


def _hidden(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)


def _folder_domains(folder: Path) -> list[tuple[str, bytes, str]]:
    """(name, bytes, path) per domain of a folder corpus, in sorted name order."""
    entries = sorted((p for p in folder.iterdir() if not p.name.startswith(".")),
                     key=lambda p: p.name)
    entries = [p for p in entries if p.is_file() or p.is_dir()]
    if not entries:
        raise CorpusError(f"corpus folder '{folder}' has no usable files: put one UTF-8 text "
                          f"file (or one subfolder of text files) per domain in it", folder)
    if len(entries) > MAX_DOMAINS:
        raise CorpusError(f"corpus folder '{folder}' has {len(entries)} domains (files and "
                          f"subfolders); at most {MAX_DOMAINS} are supported", folder)
    stems = [p.stem if p.is_file() else p.name for p in entries]
    domains = []
    for p, stem in zip(entries, stems):
        # 'notes.txt' and 'notes/' (or 'a.md' and 'a.txt') would share a stem
        name = stem if stems.count(stem) == 1 else p.name
        if p.is_file():
            domains.append((name, _read_text_file(p), str(p)))
            continue
        files = sorted((f for f in p.rglob("*") if f.is_file() and not _hidden(f.relative_to(p))),
                       key=lambda f: f.relative_to(p).as_posix())
        # empty files are common inside a source tree (__init__.py), so skip them here
        texts = [t for t in (_read_text_file(f, allow_empty=True) for f in files) if t]
        if not texts:
            raise CorpusError(f"corpus subfolder '{p}' has no non-empty text files: add text "
                              f"or remove the folder", p)
        # a newline between files, so one file's last line does not run into the next
        data = b"".join(t if t.endswith(b"\n") else t + b"\n" for t in texts)
        domains.append((name, data, str(p)))
    return domains


# ----------------------------------------------------------------------- embedded text

@functools.lru_cache(maxsize=1)  # rebuilt on every run otherwise; the bytes are immutable
def _embedded_domains() -> tuple[tuple[str, bytes], ...]:
    """(name, UTF-8 bytes) of the embedded corpus: ``prose`` then ``python``."""
    try:
        from pydoc_data.topics import topics
    except ImportError:
        raise CorpusError("embedded corpus: this Python installation has no pydoc_data "
                          "(help texts); use a text file or folder as data.corpus") from None
    prose = _cut_at_line("\n\n".join(topics[k] for k in sorted(topics)).encode("utf-8"),
                         EMBEDDED_DOMAIN_CAP)

    sources = []
    for mod in EMBEDDED_PYTHON_MODULES:
        try:
            spec = importlib.util.find_spec(mod)
        except (ImportError, ValueError):
            continue
        origin = getattr(spec, "origin", None)
        if not origin or not origin.endswith(".py") or not Path(origin).is_file():
            continue  # frozen, built-in or compiled-only installations
        data = Path(origin).read_bytes()
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            continue
        sources.append(data)
    if not sources:
        raise CorpusError("embedded corpus: none of the standard-library modules it reads "
                          "were found as .py files; use a text file or folder as data.corpus")
    # every module gets an equal share of a budget matched to the prose size
    budget = min(EMBEDDED_DOMAIN_CAP, len(prose))
    shares = fair_shares([len(s) for s in sources], budget)
    parts = [_cut_at_line(s, n) for s, n in zip(sources, shares)]
    python = b"".join(p if p.endswith(b"\n") else p + b"\n" for p in parts if p)
    return (("prose", prose), ("python", python))


def fair_shares(sizes: list[int], budget: int) -> list[int]:
    """Split ``budget`` bytes over items of ``sizes``: each gets at most an equal share,
    and what small items leave over goes to the larger ones (water-filling)."""
    shares = [0] * len(sizes)
    left = budget
    order = sorted(range(len(sizes)), key=lambda i: (sizes[i], i))
    for rank, i in enumerate(order):
        shares[i] = min(sizes[i], left // (len(sizes) - rank))
        left -= shares[i]
    return shares


def _cut_at_line(data: bytes, limit: int) -> bytes:
    """``data`` cut to at most ``limit`` bytes, at the end of a line when there is
    one (else at a character boundary), so the result is still valid UTF-8."""
    if len(data) <= limit:
        return data
    nl = data.rfind(b"\n", 0, limit)
    if nl >= 0:
        return data[:nl + 1]
    return data[:_char_boundary(data, limit)]


def _char_boundary(data: bytes, i: int) -> int:
    """The largest index <= i that does not split a UTF-8 character."""
    while 0 < i < len(data) and (data[i] & 0xC0) == 0x80:  # continuation byte
        i -= 1
    return i


# ------------------------------------------------------------------------------ probe

# A blank line, then a line whose first non-blank character is an ASCII letter.
_PARAGRAPH = re.compile(rb"\n[ \t]*\r?\n([ \t]*[A-Za-z])")


def _default_probe(sources: list[tuple[str, bytes, str]],
                   val: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """One passage per domain from its validation part (see :func:`_probe_passages`),
    concatenated and labelled by domain."""
    return _concat(_probe_passages(sources, val))


def _probe_passages(sources: list[tuple[str, bytes, str]], val: list[bytes]) -> list[bytes]:
    """One passage per domain from its validation part: the first paragraph that opens
    with a word (else the first full line), about PROBE_PASSAGE_BYTES each and
    PROBE_MAX_TOKENS in all, ending at a line end where one falls in its second half."""
    length = min(PROBE_PASSAGE_BYTES, PROBE_MAX_TOKENS // len(sources))
    passages = []
    for (_, data, _), v in zip(sources, val):
        # Prefer a paragraph that opens with a word (prose sentence, `def`, `class`)
        # over whatever line the split happens to land on: the heatmap reads better.
        m = _PARAGRAPH.search(v)
        if m:
            p = m.start(1)
        else:
            offset = len(data) - len(v)  # where the validation part begins in the domain
            p = 0 if offset == 0 or data[offset - 1] == ord("\n") else v.find(b"\n") + 1
            while p < len(v) and v[p] in b"\r\n":  # begin with text, not blank lines
                p += 1
            if p >= len(v):
                p = 0
        while p < len(v) and (v[p] & 0xC0) == 0x80:  # never start inside a character
            p += 1
        end = min(len(v), p + length)
        nl = v.rfind(b"\n", p + length // 2, end)
        end = nl + 1 if nl >= 0 and end < len(v) else _char_boundary(v, end)
        passages.append(v[p:end])
    return passages


def _custom_probe(text: str, label: int) -> tuple[np.ndarray, np.ndarray]:
    """User probe text, cut to PROBE_MAX_TOKENS at a character boundary, all labelled
    ``label`` (= the number of corpus domains, naming CUSTOM_PROBE_NAME)."""
    data = text.encode("utf-8", errors="replace")  # a lone surrogate from a text box: '?'
    data = data[:_char_boundary(data, min(len(data), PROBE_MAX_TOKENS))]
    tokens = np.frombuffer(data, dtype=np.uint8).copy()
    return tokens, np.full(len(tokens), label, dtype=np.uint8)
