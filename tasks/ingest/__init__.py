"""Ingest: read sources, chunk, embed, and (re-)index documents and their views into the corpus store."""
