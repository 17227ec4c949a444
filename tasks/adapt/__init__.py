"""Adapting a corpus's embedding model to it with its synthetic queries (``zsr adapt``).

``examples`` picks the training and dev queries and mines hard negatives; ``train`` fine-tunes, checkpoints
and publishes the model into :mod:`storage.models`.
"""
