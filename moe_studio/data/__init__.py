"""Corpora, byte tokenizer and batches. numpy only; no torch, no Qt."""
