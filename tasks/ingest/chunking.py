"""Token-aware chunking with the embedding model's own tokenizer, so no chunk is silently truncated."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from storage.ids import content_hash
from storage.types import Document
from tasks.ingest.embed import Embedder

CHUNK = "chunk"


@dataclass(frozen=True, slots=True)
class Chunk:
    """A span of a document, prefixed with its title: exactly the text that is embedded.

    ``span`` is the body's character span in the document's text (late chunking pools the tokens inside it).
    """

    doc_id: str
    ordinal: int
    text: str
    span: tuple[int, int]

    @property
    def content_hash(self) -> str:
        """Key of the embedding cache: equal text embeds equally, whichever document holds it."""
        return content_hash(self.text)

    @property
    def view_id(self) -> str:
        """Content-derived view id (document, kind, position and text)."""
        return content_hash(self.doc_id, CHUNK, str(self.ordinal), self.text)


def windows(n_tokens: int, size: int, overlap: int) -> list[tuple[int, int]]:
    """Token windows ``[start, end)`` of at most ``size`` tokens, consecutive ones sharing ``overlap``."""
    if n_tokens <= size:
        return [(0, n_tokens)]
    step = max(1, size - overlap)
    spans, start = [], 0
    while True:
        end = min(start + size, n_tokens)
        spans.append((start, end))
        if end == n_tokens:
            return spans
        start += step


def join_title(title: str, body: str) -> str:
    """Title and body as one passage, joined by a space as BEIR's sentence-transformers baseline does."""
    return f"{title} {body}" if title else body


def chunk_documents(documents: Iterable[Document], embedder: Embedder, overlap: int) -> list[Chunk]:
    """Split each document into chunks that fit the model's window (title and passage prefix included).

    A document that fits stays one chunk. Each chunk repeats the title, since a passage without its
    title loses the words that say what it is about.
    """
    docs = list(documents)  # read three times below; a streamed source yields each document once a pass
    if not docs:
        return []
    prefix_tokens = len(embedder.token_offsets([embedder.space.passage_prefix])[0])
    offsets = embedder.token_offsets([d.text for d in docs])
    title_tokens = [len(o) for o in embedder.token_offsets([d.title for d in docs])]
    chunks = []
    for doc, spans, n_title in zip(docs, offsets, title_tokens, strict=True):
        # A very long title may eat at most half of the window; the encoder truncates what is left over.
        budget = max(embedder.max_tokens - prefix_tokens - n_title, embedder.max_tokens // 2)
        if len(spans) <= budget:
            chunks.append(Chunk(doc.doc_id, 0, join_title(doc.title, doc.text), (0, len(doc.text))))
            continue
        for ordinal, (start, end) in enumerate(windows(len(spans), budget, min(overlap, budget // 2))):
            span = (spans[start][0], spans[end - 1][1])
            chunks.append(Chunk(doc.doc_id, ordinal, join_title(doc.title, doc.text[slice(*span)]), span))
    return chunks
