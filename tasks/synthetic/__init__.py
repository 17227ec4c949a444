"""Synthetic data: queries written from documents, and synthetic test sets judged by an LLM."""
