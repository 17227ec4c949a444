"""Compact codes of a views table's vectors, searched for candidates that full-precision vectors rescore.

A quantized search is a search *representation*, not a new vector space: the views table and the embedding
caches keep the float32 vectors the encoder returned, and the codes here are derived from them when a table
is first searched (:class:`storage.matrix.Matrices`), then dropped with the table version they were read
at. So switching ``ZSR_QUANTIZATION`` re-encodes nothing and changes no table name or cache key
(:attr:`storage.vector_space.VectorSpace.quantization` is kept for vectors *stored* quantised, which zsr
does not do).

Three codes, each scored against the query so that higher is nearer:

- ``binary``: one bit a dimension (its sign), packed into 64-bit words; nearness is minus the Hamming
  distance, an XOR and a popcount per word ("Binary Embedding-based Retrieval", Gao et al. 2024).
- ``int8``: one byte a dimension, each dimension's step set by the corpus's range in it (its largest
  ``|x|`` over 127 levels), so no code saturates; the float query is multiplied against the codes
  (asymmetric: only the corpus is quantised). NumPy has no int8 matrix product, so the codes are widened
  to float32 a block at a time for BLAS: the memory held stays one byte a dimension.
- ``float``: the first ``dims`` dimensions as float32, when only Matryoshka truncation is asked for.

:func:`prepare` truncates and renormalises a batch first (Matryoshka: a model trained for it keeps its
ranking in the first ``d`` dimensions; ``tasks.ingest.embed.check_truncation`` refuses other models).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from storage.product import product

Kind = Literal["none", "int8", "binary"]
BLOCK = 8192  # int8 rows widened to float32 at once: 8192 x 384 x 4 B = 12 MiB of scratch


@dataclass(frozen=True)
class Quantization:
    """How dense search holds a views table in memory; the default holds the exact float vectors.

    Attributes:
        kind: ``none`` (float32), ``int8`` or ``binary`` codes.
        rescore: Candidates taken from the codes per result wanted, rescored with the full float vectors.
        dims: Matryoshka truncation: search the codes of the first ``dims`` dimensions; ``None``: all.
    """

    kind: Kind = "none"
    rescore: int = 4
    dims: int | None = None

    @property
    def exact(self) -> bool:
        """Whether the held representation is the full float vectors, so no rescoring is needed."""
        return self.kind == "none" and self.dims is None


EXACT = Quantization()


class Codes(Protocol):
    """A table's vectors in some compact form, row for row."""

    @property
    def nbytes(self) -> int:
        """Bytes held."""
        ...

    def scores(self, queries: np.ndarray) -> np.ndarray:
        """``(queries, rows)`` nearness of each prepared query to each row, higher nearer."""
        ...


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to norm 1 as float32 (zero rows stay zero), so a dot product is a cosine."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.ascontiguousarray(vectors / np.where(norms > 0, norms, 1.0), dtype=np.float32)


def prepare(vectors: np.ndarray, dims: int | None) -> np.ndarray:
    """The first ``dims`` dimensions of each row (all when ``None``), renormalised."""
    return normalise(vectors if dims is None else vectors[:, :dims])


@dataclass(frozen=True)
class FloatCodes:
    """Float32 rows: the truncated vectors of a Matryoshka search without quantization."""

    vectors: np.ndarray

    @property
    def nbytes(self) -> int:
        """Bytes held."""
        return int(self.vectors.nbytes)

    def scores(self, queries: np.ndarray) -> np.ndarray:
        """Cosines."""
        return product(queries, self.vectors)


@dataclass(frozen=True)
class Int8Codes:
    """One signed byte a dimension; ``step[d]`` is the value of one unit in dimension ``d``."""

    codes: np.ndarray
    step: np.ndarray

    @property
    def nbytes(self) -> int:
        """Bytes held."""
        return int(self.codes.nbytes + self.step.nbytes)

    def scores(self, queries: np.ndarray) -> np.ndarray:
        """Approximate cosines: the query against the codes, the steps folded into the query."""
        scaled = (queries * self.step).astype(np.float32)
        out = np.empty((len(queries), len(self.codes)), np.float32)
        for start in range(0, len(self.codes), BLOCK):
            block = self.codes[start : start + BLOCK].astype(np.float32)
            out[:, start : start + BLOCK] = product(scaled, block)
        return out


@dataclass(frozen=True)
class BinaryCodes:
    """Sign bits packed into 64-bit words, ``(rows, ceil(dim / 64))``."""

    words: np.ndarray

    @property
    def nbytes(self) -> int:
        """Bytes held."""
        return int(self.words.nbytes)

    def scores(self, queries: np.ndarray) -> np.ndarray:
        """Minus the Hamming distance between each query's sign bits and each row's."""
        out = np.empty((len(queries), len(self.words)), np.int32)
        for q, query in enumerate(pack_signs(queries)):
            out[q] = -np.bitwise_count(self.words ^ query).sum(axis=1, dtype=np.int32)
        return out


def pack_signs(vectors: np.ndarray) -> np.ndarray:
    """One bit a dimension (1 where positive) packed into ``uint64`` words, zero-padded to a whole word."""
    packed = np.packbits(vectors > 0, axis=1)
    padded = np.zeros((len(vectors), -(-packed.shape[1] // 8) * 8), np.uint8)
    padded[:, : packed.shape[1]] = packed
    return padded.view(np.uint64)


def int8_step(batches: Iterable[np.ndarray], width: int) -> np.ndarray:
    """Each dimension's step: its largest ``|x|`` over the batches, over 127 (1 where always 0)."""
    top = np.zeros(width, np.float32)
    for batch in batches:
        if len(batch):
            np.maximum(top, np.abs(batch).max(axis=0), out=top)
    return np.where(top > 0, top / 127, 1.0).astype(np.float32)


def encode(kind: Kind, batches: Callable[[], Iterable[np.ndarray]], width: int) -> Codes:
    """The codes of every prepared batch ``batches()`` yields, in order (read twice for int8: steps first).

    Args:
        kind: The codes to build; ``none`` keeps float32 (the truncated vectors).
        batches: Yields ``(rows, width)`` prepared float vectors; called again for each pass.
        width: The prepared vectors' dimension (for a table without rows).
    """
    if kind == "binary":
        return BinaryCodes(_stack([pack_signs(b) for b in batches()], -(-width // 64), np.uint64))
    if kind == "int8":
        step = int8_step(batches(), width)
        parts = [np.clip(np.rint(b / step), -127, 127).astype(np.int8) for b in batches()]
        return Int8Codes(_stack(parts, width, np.int8), step)
    return FloatCodes(_stack(list(batches()), width, np.float32))


def _stack(parts: list[np.ndarray], width: int, dtype: type) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros((0, width), dtype)
