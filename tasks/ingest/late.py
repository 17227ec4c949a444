"""Late chunking (Günther et al., 2024): chunk vectors pooled from one pass over the whole document.

Chunk boundaries are those of :func:`~tasks.ingest.chunking.chunk_documents`. The whole passage (passage
prefix, title and text, as the chunks see them) goes through the transformer at once, and each chunk's vector
is the mean of the contextual token vectors of its own text, normalised: the prefix and title tokens, which
every chunk repeats, and its body span. Special tokens are context only ([CLS] and [SEP] belong to no one
chunk), except for a chunk that is the whole document within one pass: it is pooled as the model pools a
text, special tokens included, so late chunking of a one-chunk document *is* naive chunking.

A passage longer than one forward pass takes ("long late chunking") is encoded in overlapping macro windows:
each window after the first starts :data:`MACRO_OVERLAP` tokens before the previous one ends, and those
tokens give it left context only; every token's vector comes from the window that saw it with context on
its left (as the paper's code does). Each window gets the model's own special tokens, so the model always
reads well-formed input.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np

from storage.corpus_store import CorpusStore
from storage.ids import content_hash
from storage.types import Document
from tasks.ingest.chunking import Chunk, join_title, windows
from tasks.ingest.embed import Embedder, SentenceTransformerEmbedder

log = logging.getLogger(__name__)

LATE = "late"  # VectorSpace.chunking of late-chunked corpora
# Part of what "late" means: changing it changes vectors, so it would be a new chunking value, never an edit.
MACRO_OVERLAP = 128  # tokens of left context each macro window after the first repeats


@runtime_checkable
class TokenModel(Protocol):
    """What late chunking needs from a model: the contextual vectors of every token of a text."""

    limit: int  # content tokens one forward pass takes (the special tokens it adds excluded)

    def tokenize(self, texts: list[str]) -> list[tuple[list[int], list[tuple[int, int]]]]:
        """Token ids and their character spans, per text, without special tokens or truncation."""
        ...

    def forward(self, windows: Sequence[Sequence[int]]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per window of token ids: the vectors of its tokens, and those of the special tokens added to it."""
        ...


class Tokens(NamedTuple):
    """A passage as the model read it: its tokens' character spans and contextual vectors."""

    offsets: list[tuple[int, int]]
    vectors: np.ndarray  # one row per token
    specials: np.ndarray | None  # the special tokens' vectors, when the passage fitted one pass


class SentenceTransformerTokens:
    """A sentence-transformers model's transformer module, called directly on windows of token ids.

    Calling the module rather than ``encode`` leaves the shared model's ``max_seq_length`` (256 for MiniLM,
    the window its queries and naive chunks keep) untouched, while a pass here takes every position the
    model has (512 for MiniLM, less its two special tokens).
    """

    def __init__(self, embedder: SentenceTransformerEmbedder) -> None:
        """Wrap ``embedder``'s model.

        Raises:
            ValueError: the model pools otherwise than by the mean of its token vectors.
        """
        model = embedder.model
        modules = [type(m).__name__ for m in model]
        pooling = getattr(model[1], "pooling_mode", None) if len(modules) > 1 else None
        if modules[:2] != ["Transformer", "Pooling"] or pooling != "mean" or set(modules[2:]) - {"Normalize"}:
            raise ValueError(
                "late chunking needs a model that mean-pools its token vectors with nothing after but "
                f"Normalize; {embedder.space.model!r} is {' -> '.join(modules)} (pooling {pooling!r}): "
                "ingest with --chunking tokens"
            )
        self.transformer = model[0]
        self.tokenizer = model.tokenizer
        self.batch_size = embedder.batch_size
        self.device = model.device
        # The special tokens the tokenizer wraps a text in, read off a probe ([CLS] x [SEP] for BERT).
        probe = self.tokenizer("x", return_special_tokens_mask=True)
        ids, special = probe["input_ids"], probe["special_tokens_mask"]
        first, last = special.index(0), len(special) - special[::-1].index(0)
        self.head, self.tail = list(ids[:first]), list(ids[last:])
        auto: Any = self.transformer.auto_model
        # RoBERTa-style embeddings number positions from padding_idx + 1; BERT's (no padding_idx) from 0.
        padding = getattr(auto.embeddings, "padding_idx", None)
        offset = 0 if padding is None else padding + 1
        self.limit = int(auto.config.max_position_embeddings) - offset - len(self.head) - len(self.tail)
        self.pad = self.tokenizer.pad_token_id or 0

    def tokenize(self, texts: list[str]) -> list[tuple[list[int], list[tuple[int, int]]]]:
        """Ids and offsets from the fast tokenizer, as :meth:`SentenceTransformerEmbedder.token_offsets`."""
        encoded = self.tokenizer(
            texts, add_special_tokens=False, return_offsets_mapping=True, truncation=False, verbose=False
        )
        return [
            (list(ids), [(int(a), int(b)) for a, b in spans])
            for ids, spans in zip(encoded["input_ids"], encoded["offset_mapping"], strict=True)
        ]

    def forward(self, windows: Sequence[Sequence[int]]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Batches of ``batch_size`` windows, sorted by length so little of a batch is padding."""
        import torch

        out: list[Any] = [None] * len(windows)
        h = len(self.head)
        order = sorted(range(len(windows)), key=lambda i: len(windows[i]))
        for first in range(0, len(order), self.batch_size):
            part = order[first : first + self.batch_size]
            rows = [[*self.head, *windows[i], *self.tail] for i in part]
            width = max(map(len, rows))
            ids = torch.tensor([r + [self.pad] * (width - len(r)) for r in rows], device=self.device)
            mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=self.device)
            with torch.inference_mode():
                features = self.transformer({"input_ids": ids, "attention_mask": mask})
            vectors = features["token_embeddings"].float().cpu().numpy()
            for row, i in enumerate(part):
                n = len(windows[i])
                specials = np.concatenate([vectors[row, :h], vectors[row, h + n : len(rows[row])]])
                out[i] = (vectors[row, h : h + n], specials)
        return out


def token_model(embedder: Embedder) -> TokenModel:
    """The token-level access to ``embedder``'s model that late chunking needs.

    Raises:
        ValueError: the embedder gives no access to its token vectors.
    """
    if isinstance(embedder, TokenModel):
        return embedder
    if isinstance(embedder, SentenceTransformerEmbedder):
        return SentenceTransformerTokens(embedder)
    raise ValueError(
        f"late chunking needs the token vectors of {embedder.space.model!r}, which its embedder "
        f"({type(embedder).__name__}) does not give: ingest with --chunking tokens"
    )


def contextual_tokens(model: TokenModel, passages: Sequence[str]) -> list[Tokens]:
    """Each passage's token vectors in context: one pass per passage, macro windows beyond ``model.limit``."""
    tokenized = model.tokenize(list(passages))
    plans = [windows(len(ids), model.limit, min(MACRO_OVERLAP, model.limit // 2)) for ids, _ in tokenized]
    flat = [ids[start:end] for (ids, _), plan in zip(tokenized, plans, strict=True) for start, end in plan]
    encoded = iter(model.forward(flat))
    out = []
    for (_, offsets), plan in zip(tokenized, plans, strict=True):
        parts = [next(encoded) for _ in plan]
        kept = [parts[0][0]]
        for k in range(1, len(plan)):
            # This window's first tokens were the previous one's last: here they were context only.
            kept.append(parts[k][0][plan[k - 1][1] - plan[k][0] :])
        specials = parts[0][1] if len(plan) == 1 else None
        out.append(Tokens(offsets, np.concatenate(kept), specials))
    return out


def pool(tokens: Tokens, head: int, span: tuple[int, int], whole: bool) -> np.ndarray:
    """The normalised mean of a chunk's token vectors.

    Args:
        tokens: the passage as the model read it.
        head: characters of the passage before the body (passage prefix and title): every chunk has them.
        span: the chunk's body, as characters of the document's text.
        whole: the chunk is the whole document: pool it as the model pools a text (module docstring).
    """
    start, end = head + span[0], head + span[1]
    rows = [i for i, (a, b) in enumerate(tokens.offsets) if b <= head or (a >= start and b <= end)]
    vectors = tokens.vectors[rows]
    if whole and tokens.specials is not None:
        vectors = np.concatenate([tokens.specials, tokens.vectors])
    mean = vectors.mean(axis=0)
    return (mean / np.linalg.norm(mean)).astype(np.float32)


def late_key(doc: Document, chunk: Chunk) -> str:
    """The cache key of a late chunk's vector: its document's title and text, and its span in them.

    Never the chunk's text alone: a late chunk's vector depends on the whole document, so the same text in
    two documents (a shared boilerplate paragraph, the untouched start of an edited document) gets two
    vectors, and a text-keyed cache would hand one document's vector to the other. The metadata, which no
    vector sees, is left out, so a metadata-only change re-encodes nothing.
    """
    return content_hash(LATE, doc.title, doc.text, str(chunk.span[0]), str(chunk.span[1]))


def embed_late(
    store: CorpusStore, embedder: Embedder, docs: Sequence[Document], chunks: Sequence[Chunk]
) -> tuple[list[str], dict[str, np.ndarray], int]:
    """Late-chunked vectors of ``chunks`` (of ``docs``), from the cache or one pass per document.

    Returns:
        The cache key of each chunk (:func:`late_key`), the vectors by key, and how many were encoded.
        Fresh vectors are committed to the cache before they are returned, as :func:`embed_cached` does.
    """
    by_id: Mapping[str, Document] = {d.doc_id: d for d in docs}
    keys = [late_key(by_id[c.doc_id], c) for c in chunks]
    vectors = store.cache.get(embedder.space, "passage", list(dict.fromkeys(keys)))
    todo: dict[str, list[tuple[str, Chunk]]] = {}
    for key, chunk in zip(keys, chunks, strict=True):
        if key not in vectors:
            todo.setdefault(chunk.doc_id, []).append((key, chunk))
    if not todo:
        return keys, vectors, 0
    prefix = embedder.space.passage_prefix
    passages = [prefix + join_title(by_id[d].title, by_id[d].text) for d in todo]
    fresh: dict[str, np.ndarray] = {}
    for doc_id, tokens in zip(todo, contextual_tokens(token_model(embedder), passages), strict=True):
        doc = by_id[doc_id]
        head = len(prefix) + len(join_title(doc.title, doc.text)) - len(doc.text)  # prefix, title, space
        for key, chunk in todo[doc_id]:
            fresh[key] = pool(tokens, head, chunk.span, whole=chunk.span == (0, len(doc.text)))
    store.cache.put(embedder.space, "passage", list(fresh), np.stack(list(fresh.values())))
    vectors.update(fresh)
    log.debug("late chunking: %d chunk vectors from %d documents", len(fresh), len(todo))
    return keys, vectors, len(fresh)
