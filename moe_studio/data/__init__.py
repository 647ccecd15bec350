"""Corpora, byte tokenizer and batches. numpy only; no torch, no Qt."""
from .batches import BatchSampler, bootstrap_starts, eval_windows, window_starts
from .corpus import (CUSTOM_PROBE_NAME, EMBEDDED, PROBE_MAX_TOKENS, Corpus, CorpusError,
                     load_corpus, probe_passages, read_domains)
from .tokenizer import TOKEN_CLASSES, ByteTokenizer, token_class, token_classes

__all__ = [
    "BatchSampler", "bootstrap_starts", "eval_windows", "window_starts",
    "CUSTOM_PROBE_NAME", "EMBEDDED", "PROBE_MAX_TOKENS", "Corpus", "CorpusError", "load_corpus",
    "probe_passages", "read_domains",
    "TOKEN_CLASSES", "ByteTokenizer", "token_class", "token_classes",
]
