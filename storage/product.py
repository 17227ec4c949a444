"""The matrix product of exact search, run on torch's thread pool rather than NumPy's BLAS.

A search sits between two query encodes, which run on torch's threads. NumPy's OpenBLAS keeps its own
threads spinning for a while after each product, so on a 2-core machine the next encode fought them: dense
search with its query encoding took 28-60 ms p50 (p95 115 ms) against 9.6 ms with the product on one BLAS
thread, while one BLAS thread made the product itself 1.8x slower than NumPy's default (bench/speed.py,
2026-12-02, README "Speed"). On torch's pool the product is as fast as NumPy's default (0.38 against 0.34 ms
at 11k x 384) and leaves no other pool spinning. torch is loaded already wherever queries are encoded.
"""

from __future__ import annotations

import numpy as np


def product(queries: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """``queries @ vectors.T`` as float32, ``(len(queries), len(vectors))``."""
    import torch

    with torch.inference_mode():
        left = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
        right = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32))
        return (left @ right.T).numpy()
