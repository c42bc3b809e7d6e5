"""Corpora, probes, tokenizer and input pipeline."""
