"""The LanceDB corpus store: per-corpus ``documents`` and ``views`` tables, the embedding cache, the registry.

Each corpus gets its own pair of tables (``<corpus>__documents``, ``<corpus>__views``) rather than one shared
table with a ``corpus`` column: BM25 statistics must be per corpus, and corpora may use embedding models of
different dimensions. Every write is one LanceDB commit (atomic), and every id is content-derived, so any
write can be repeated after a crash and converge to the same content.

The unit of commit that re-indexing builds on: a document is its ``documents`` row together with the views
that carry the row's content hash in ``views.doc_hash``. Three rules keep that unit checkable whatever point
a writer dies at: all views of a document version go in one commit (:meth:`CorpusStore.put_views`); a
document's views are deleted all at once (:meth:`CorpusStore.delete_views`), or, as stale, only once the
views of the version replacing them are in (:meth:`CorpusStore.delete_stale_views`). Then a document is
whole exactly when it has at least one chunk view and every view of it carries its row's hash, which anyone
can check (:meth:`CorpusStore.view_hashes`). Re-indexing writes the row between those two steps so that a
row never names a version whose vectors are missing; the check does not depend on it. A later store must
keep the check possible: a version tag on every view, or a document and its views committed together.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import lancedb
import numpy as np
import pyarrow as pa
from lancedb.index import FTS, IvfHnswSq
from lancedb.query import BooleanQuery, LanceVectorQueryBuilder, MatchQuery, Occur

from storage.ids import content_hash

log = logging.getLogger(__name__)

CORPUS_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
REGISTRY = "corpora"
# LanceDB's filter strings are SQL: long IN lists are split so each statement stays small.
_IN_BATCH = 2_000

DOCUMENTS_SCHEMA = pa.schema(
    [
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("title", pa.string()),
        pa.field("text", pa.string()),
        pa.field("lexical", pa.string()),  # what BM25 indexes: title + text (+ expansions, later)
        pa.field("metadata", pa.string()),  # canonical JSON
        pa.field("content_hash", pa.string()),
        pa.field("source", pa.string()),
        pa.field("ingested_at", pa.timestamp("us", tz="UTC")),
    ]
)
REGISTRY_SCHEMA = pa.schema(
    [
        pa.field("name", pa.string(), nullable=False),
        pa.field("model", pa.string()),
        pa.field("query_prefix", pa.string()),
        pa.field("passage_prefix", pa.string()),
        pa.field("dim", pa.int32()),
        pa.field("source", pa.string()),
        pa.field("created_at", pa.timestamp("us", tz="UTC")),
        pa.field("updated_at", pa.timestamp("us", tz="UTC")),
    ]
)


SYNTHETIC_SCHEMA = pa.schema(
    [
        pa.field("query_id", pa.string(), nullable=False),
        pa.field("doc_id", pa.string()),
        pa.field("doc_hash", pa.string()),  # content hash of the document the query was written from
        pa.field("text", pa.string()),  # the parsed query ("" when nothing usable was parsed)
        pa.field("raw", pa.string()),  # the generator's output, kept as it came
        pa.field("style", pa.string()),
        pa.field("generator", pa.string()),
        pa.field("prompt_version", pa.string()),
        pa.field("sample", pa.int32()),
        pa.field("kept", pa.bool_()),
        pa.field("reason", pa.string()),  # why it was rejected, null when kept
        pa.field("n_words", pa.int32()),
        pa.field(
            "copy_score", pa.float32()
        ),  # share of the query's words in one run copied from the document
        pa.field("duplicate_of", pa.string()),
        pa.field(
            "roundtrip_rank", pa.int32()
        ),  # rank of the source document for the query; null: not in top k
        pa.field("created_at", pa.timestamp("us", tz="UTC")),
    ]
)


def views_schema(dim: int) -> pa.Schema:
    """Schema of a corpus's ``views`` table; ``text`` is exactly what was embedded (less the model prefix)."""
    return pa.schema(
        [
            pa.field("view_id", pa.string(), nullable=False),
            pa.field("doc_id", pa.string()),
            pa.field("kind", pa.string()),
            pa.field("ordinal", pa.int32()),
            pa.field("text", pa.string()),
            pa.field("vector", pa.list_(pa.float32(), dim)),
            pa.field("model", pa.string()),
            pa.field("content_hash", pa.string()),
            # content hash of the document version the view was built from (see the module docstring)
            pa.field("doc_hash", pa.string()),
        ]
    )


def cache_schema(dim: int) -> pa.Schema:
    """Schema of an embedding cache table: one vector per content hash."""
    return pa.schema(
        [
            pa.field("content_hash", pa.string(), nullable=False),
            pa.field("vector", pa.list_(pa.float32(), dim)),
        ]
    )


def sql_list(values: Iterable[str]) -> str:
    """A SQL ``IN`` list of string literals (single quotes doubled, so ids with quotes are safe)."""
    return ", ".join("'" + v.replace("'", "''") + "'" for v in values)


def _chunks(values: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(values), _IN_BATCH):
        yield values[start : start + _IN_BATCH]


def vectors_to_arrow(vectors: np.ndarray) -> pa.FixedSizeListArray:
    """A (n, dim) float array as an Arrow fixed-size-list column."""
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).ravel())
    return pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])


@dataclass(frozen=True, slots=True)
class CorpusInfo:
    """A registered corpus: the embedding model and prefixes its vectors were made with."""

    name: str
    model: str
    query_prefix: str
    passage_prefix: str
    dim: int
    source: str
    created_at: datetime
    updated_at: datetime


class UnknownCorpusError(LookupError):
    """The corpus was never ingested."""


class IncompleteCorpusError(LookupError):
    """A corpus's first ingest stopped before it finished (killed, or failed); re-running it completes it."""


class CorpusStore:
    """All LanceDB access for corpora; ``tasks`` never talk to LanceDB directly."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.db = lancedb.connect(uri)

    def _table_names(self) -> list[str]:
        names: list[str] = []
        token = None
        while True:
            page = self.db.list_tables(page_token=token)
            names.extend(page.tables)
            token = page.page_token
            if not token:
                return names

    def _exists(self, name: str) -> bool:
        token = None
        while True:
            page = self.db.list_tables(page_token=token)
            if name in page.tables:
                return True
            token = page.page_token
            if not token:
                return False

    # -- registry ----------------------------------------------------------------------------------------
    def corpora(self) -> list[CorpusInfo]:
        """Every registered corpus, by name."""
        if not self._exists(REGISTRY):
            return []
        rows = self.db.open_table(REGISTRY).to_arrow().to_pylist()
        return sorted((CorpusInfo(**row) for row in rows), key=lambda c: c.name)

    def corpus(self, name: str) -> CorpusInfo:
        """The registered corpus ``name``, or an error that lists the ones that exist.

        Raises:
            IncompleteCorpusError: the corpus's first ingest did not finish, so its tables cannot be searched.
            UnknownCorpusError: no ingest of the corpus ever started.
        """
        reason = self.incomplete(name)
        if reason is not None:
            raise IncompleteCorpusError(
                f"corpus {name!r} is incomplete ({reason}): its first ingest did not finish; "
                f"re-run the ingest: `zsr ingest SOURCE --corpus {name}`"
            )
        corpora = self.corpora()
        for info in corpora:
            if info.name == name:
                return info
        known = ", ".join(c.name for c in corpora) or "none yet"
        raise UnknownCorpusError(
            f"corpus {name!r} was never ingested into {self.uri} (known: {known}); "
            f"run `zsr ingest SOURCE --corpus {name}` first"
        )

    def incomplete(self, name: str) -> str | None:
        """Why the first ingest of ``name`` looks unfinished, or ``None``.

        A first ingest creates the documents table while diffing, registers the corpus, writes views and rows
        batch by batch and builds the BM25 index last; a run stopped anywhere in between leaves one of the
        states below. A later re-index that stops keeps the earlier, complete tables and index.
        """
        registered = any(info.name == name for info in self.corpora())
        missing = [kind for kind in ("documents", "views") if not self._exists(f"{name}__{kind}")]
        if not registered:
            return None if len(missing) == 2 else "its tables exist but it was never registered"
        if missing:
            return f"its {' and '.join(missing)} table{'s are' if len(missing) == 2 else ' is'} missing"
        if not any(index.index_type == "FTS" for index in self.documents(name).list_indices()):
            return "its BM25 index was never built"
        return None

    def incomplete_corpora(self) -> dict[str, str]:
        """``name -> reason`` for every corpus, registered or not, whose first ingest did not finish."""
        names = {info.name for info in self.corpora()}
        names |= {t.rsplit("__", 1)[0] for t in self._table_names() if t.endswith(("__documents", "__views"))}
        found = {name: self.incomplete(name) for name in sorted(names)}
        return {name: reason for name, reason in found.items() if reason is not None}

    def register(self, info: CorpusInfo) -> None:
        """Insert or update the registry row of a corpus."""
        row = pa.Table.from_pylist([asdict(info)], REGISTRY_SCHEMA)
        if not self._exists(REGISTRY):
            self.db.create_table(REGISTRY, schema=REGISTRY_SCHEMA)
        table = self.db.open_table(REGISTRY)
        table.merge_insert("name").when_matched_update_all().when_not_matched_insert_all().execute(row)

    # -- tables ------------------------------------------------------------------------------------------
    @staticmethod
    def check_name(name: str) -> str:
        """Validate a corpus name (it becomes part of table names)."""
        if not CORPUS_NAME.match(name):
            raise ValueError(
                f"corpus name {name!r} is not allowed; use 1-64 letters, digits, '-' or '_' "
                "starting with a letter or digit"
            )
        return name

    def documents(self, corpus: str) -> lancedb.table.Table:
        """The ``documents`` table of ``corpus``, created empty on first use."""
        name = f"{corpus}__documents"
        if not self._exists(name):
            return self.db.create_table(name, schema=DOCUMENTS_SCHEMA)
        return self.db.open_table(name)

    def views(self, corpus: str, dim: int) -> lancedb.table.Table:
        """The ``views`` table of ``corpus``, created empty on first use."""
        name = f"{corpus}__views"
        if not self._exists(name):
            return self.db.create_table(name, schema=views_schema(dim))
        return self.db.open_table(name)

    def _writable_views(self, corpus: str, dim: int) -> lancedb.table.Table:
        """The ``views`` table, given a ``doc_hash`` column first if an older zsr wrote it without one.

        The added column is null, so every document looks unverified and the next re-index rebuilds its
        views (from the embedding cache). Readers never need the column, so only writers add it.
        """
        table = self.views(corpus, dim)
        if "doc_hash" not in table.schema.names:
            log.info("adding doc_hash to the views of %s; the next ingest re-checks every document", corpus)
            table.add_columns(pa.field("doc_hash", pa.string()))
        return table

    def versions(self, corpus: str) -> dict[str, int]:
        """Current LanceDB version of each table of ``corpus`` (0 where it does not exist yet)."""
        out = {}
        for kind in ("documents", "views"):
            name = f"{corpus}__{kind}"
            out[kind] = self.db.open_table(name).version if self._exists(name) else 0
        return out

    def counts(self, corpus: str) -> dict[str, int]:
        """Rows in each table of ``corpus``."""
        out = {}
        for kind in ("documents", "views"):
            name = f"{corpus}__{kind}"
            out[kind] = self.db.open_table(name).count_rows() if self._exists(name) else 0
        return out

    # -- documents ---------------------------------------------------------------------------------------
    def document_hashes(self, corpus: str) -> dict[str, str]:
        """``doc_id -> content_hash`` of every stored document (the re-index diff's left side)."""
        table = self.documents(corpus).to_arrow().select(["doc_id", "content_hash"])
        return dict(zip(table["doc_id"].to_pylist(), table["content_hash"].to_pylist(), strict=True))

    def upsert_documents(self, corpus: str, rows: pa.Table) -> None:
        """Insert or replace documents by ``doc_id`` (one commit)."""
        table = self.documents(corpus)
        table.merge_insert("doc_id").when_matched_update_all().when_not_matched_insert_all().execute(rows)

    def delete_documents(self, corpus: str, doc_ids: Sequence[str]) -> None:
        """Delete document rows (their views go first, with :meth:`delete_views`)."""
        documents = self.documents(corpus)
        for part in _chunks(doc_ids):
            documents.delete(f"doc_id IN ({sql_list(part)})")

    def fetch_documents(
        self, corpus: str, doc_ids: Sequence[str], columns: Sequence[str]
    ) -> list[dict[str, Any]]:
        """Selected columns of the given documents (order not guaranteed)."""
        table, out = self.documents(corpus), []
        for part in _chunks(doc_ids):
            out += (
                table.search()
                .where(f"doc_id IN ({sql_list(part)})")
                .select(list(columns))
                .limit(None)
                .to_list()
            )
        return out

    # -- views -------------------------------------------------------------------------------------------
    def put_views(self, corpus: str, dim: int, rows: pa.Table) -> None:
        """Insert views, or update them by ``view_id`` (one commit: a version's views land all at once).

        A view whose id is already stored is updated, as it may carry another ``doc_hash`` (a change of
        metadata alone keeps the chunk texts, hence the ids). Old views stay until
        :meth:`delete_stale_views`, so every document stays searchable throughout.
        """
        if rows.num_rows:
            self._writable_views(corpus, dim).merge_insert(
                "view_id"
            ).when_matched_update_all().when_not_matched_insert_all().execute(rows)

    def delete_stale_views(self, corpus: str, dim: int, current: Mapping[str, str]) -> int:
        """Delete the views of ``current``'s documents that do not carry their current hash.

        Call it only once :meth:`put_views` has written the views that carry those hashes: a crash midway
        then leaves stale views beside them, which the next run's check still finds. Returns how many were
        deleted; nothing is written when none is stale.
        """
        table = self._writable_views(corpus, dim)
        stale: list[str] = []
        for part in _chunks(list(current)):
            found = (
                table.search()
                .where(f"doc_id IN ({sql_list(part)})")
                .select(["view_id", "doc_id", "doc_hash"])
                .limit(None)
                .to_arrow()
            )
            stale += [
                view_id
                for view_id, doc_id, doc_hash in zip(
                    found["view_id"].to_pylist(),
                    found["doc_id"].to_pylist(),
                    found["doc_hash"].to_pylist(),
                    strict=True,
                )
                if doc_hash != current[doc_id]
            ]
        for part in _chunks(stale):
            table.delete(f"view_id IN ({sql_list(part)})")
        return len(stale)

    def delete_views(self, corpus: str, dim: int, doc_ids: Sequence[str]) -> None:
        """Delete every view of ``doc_ids``; each document's views go in one commit, never some of them."""
        table = self.views(corpus, dim)
        for part in _chunks(doc_ids):
            table.delete(f"doc_id IN ({sql_list(part)})")

    def view_hashes(self, corpus: str) -> dict[str, set[tuple[str, str | None]]]:
        """``doc_id -> {(kind, doc_hash)}`` over all views (None: a view written before views carried one).

        What re-indexing checks each document's views against (see the module docstring).
        """
        name = f"{corpus}__views"
        if not self._exists(name):
            return {}
        table = self.db.open_table(name)
        columns = ["doc_id", "kind"] + (["doc_hash"] if "doc_hash" in table.schema.names else [])
        found = table.search().select(columns).limit(None).to_arrow()
        hashes = found["doc_hash"].to_pylist() if "doc_hash" in columns else [None] * found.num_rows
        out: dict[str, set[tuple[str, str | None]]] = {}
        for doc_id, kind, doc_hash in zip(
            found["doc_id"].to_pylist(), found["kind"].to_pylist(), hashes, strict=True
        ):
            out.setdefault(doc_id, set()).add((kind, doc_hash))
        return out

    def document_vectors(
        self, corpus: str, dim: int, doc_ids: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Each document's stored vector: the normalised mean of its chunk vectors (all documents if None)."""
        table = self.views(corpus, dim)
        parts = [None] if doc_ids is None else list(_chunks(doc_ids))
        sums: dict[str, np.ndarray] = {}
        for part in parts:
            where = "kind = 'chunk'" + (f" AND doc_id IN ({sql_list(part)})" if part is not None else "")
            found = table.search().where(where).select(["doc_id", "vector"]).limit(None).to_arrow()
            vectors = found["vector"].combine_chunks().flatten().to_numpy().reshape(-1, dim)
            for doc_id, vector in zip(found["doc_id"].to_pylist(), vectors, strict=True):
                sums[doc_id] = sums[doc_id] + vector if doc_id in sums else vector.astype(np.float32)
        return {d: v / (np.linalg.norm(v) or 1.0) for d, v in sums.items()}

    def sync_views(self, corpus: str, dim: int, kinds: Sequence[str], rows: pa.Table) -> tuple[int, int]:
        """Make ``rows`` the complete set of views of ``kinds``: add the missing, delete the rest.

        Returns (added, deleted). Views are keyed by content-derived ids, so unchanged ones are untouched; a
        view whose id is stored with another ``doc_hash`` counts as added and is updated.
        """
        table = self._writable_views(corpus, dim)
        found = (
            table.search()
            .where(f"kind IN ({sql_list(kinds)})")
            .select(["view_id", "doc_hash"])
            .limit(None)
            .to_arrow()
        )
        existing = dict(zip(found["view_id"].to_pylist(), found["doc_hash"].to_pylist(), strict=True))
        wanted = rows["view_id"].to_pylist()
        new = rows.filter(
            pa.array(
                [
                    v not in existing or existing[v] != h
                    for v, h in zip(wanted, rows["doc_hash"].to_pylist(), strict=True)
                ],
                pa.bool_(),
            )
        )
        if new.num_rows:
            table.merge_insert("view_id").when_matched_update_all().when_not_matched_insert_all().execute(new)
        stale = sorted(set(existing) - set(wanted))
        for part in _chunks(stale):
            table.delete(f"view_id IN ({sql_list(part)})")
        return new.num_rows, len(stale)

    # -- document expansion (doc2query) -------------------------------------------------------------------
    def write_expansion(self, corpus: str, rows: pa.Table) -> None:
        """Replace the expanded lexical index: title + text + kept synthetic queries, BM25-indexed.

        A table of its own, rebuilt whole (one commit, then one index build): cheap next to generation, and
        the plain ``bm25`` index stays exactly as ingested.
        """
        table = self.db.create_table(f"{corpus}__expanded", rows, mode="overwrite")
        table.create_index(
            "lexical", config=FTS(language="English", stem=True, remove_stop_words=True), replace=True
        )

    def expansion_search(self, corpus: str, text: str, limit: int) -> list[tuple[str, float]]:
        """BM25 hits over the expanded index."""
        name = f"{corpus}__expanded"
        if not self._exists(name):
            raise LookupError(
                f"corpus {corpus!r} has no expanded index yet; run `zsr synthesize --corpus {corpus}`"
            )
        rows = (
            self.db.open_table(name)
            .search(text, query_type="fts")
            .select(["doc_id", "_score"])
            .limit(limit)
            .to_list()
        )
        return [(r["doc_id"], float(r["_score"])) for r in rows]

    # -- synthetic queries -------------------------------------------------------------------------------
    def synthetic(self, corpus: str) -> lancedb.table.Table:
        """The ``synthetic_queries`` table of ``corpus``, created empty on first use."""
        name = f"{corpus}__synthetic_queries"
        if not self._exists(name):
            return self.db.create_table(name, schema=SYNTHETIC_SCHEMA)
        return self.db.open_table(name)

    def upsert_synthetic(self, corpus: str, rows: pa.Table) -> None:
        """Insert or update synthetic queries by ``query_id`` (one commit)."""
        if rows.num_rows:
            table = self.synthetic(corpus)
            table.merge_insert("query_id").when_matched_update_all().when_not_matched_insert_all().execute(
                rows.cast(SYNTHETIC_SCHEMA)
            )

    # -- embedding cache ---------------------------------------------------------------------------------
    def cache_table(self, model_key: str, dim: int) -> lancedb.table.Table:
        """The embedding cache of one model (shared by every corpus that uses the model)."""
        name = f"embedcache__{model_key}"
        if not self._exists(name):
            return self.db.create_table(name, schema=cache_schema(dim))
        return self.db.open_table(name)

    def cached_vectors(self, model_key: str, dim: int, hashes: Sequence[str]) -> dict[str, np.ndarray]:
        """Vectors already computed for any of ``hashes``."""
        table = self.cache_table(model_key, dim)
        out: dict[str, np.ndarray] = {}
        for part in _chunks(hashes):
            found = (
                table.search()
                .where(f"content_hash IN ({sql_list(part)})")
                .select(["content_hash", "vector"])
                .limit(None)
                .to_arrow()
            )
            if found.num_rows:
                vectors = found["vector"].combine_chunks().flatten().to_numpy().reshape(found.num_rows, dim)
                out.update(zip(found["content_hash"].to_pylist(), vectors, strict=True))
        return out

    def cache_vectors(self, model_key: str, dim: int, hashes: Sequence[str], vectors: np.ndarray) -> None:
        """Persist freshly computed vectors (one commit per call, so finished batches survive a crash)."""
        rows = pa.Table.from_arrays(
            [pa.array(hashes, pa.string()), vectors_to_arrow(vectors)], schema=cache_schema(dim)
        )
        self.cache_table(model_key, dim).merge_insert("content_hash").when_not_matched_insert_all().execute(
            rows
        )

    # -- indexes -----------------------------------------------------------------------------------------
    def rebuild_fts(self, corpus: str) -> None:
        """(Re)build the BM25 index over ``lexical``.

        Rebuilt rather than optimised incrementally, so the index (and every BM25 score) is the same as a
        fresh ingest of the same content would give.
        """
        self.documents(corpus).create_index(
            "lexical", config=FTS(language="English", stem=True, remove_stop_words=True), replace=True
        )

    def has_fts(self, corpus: str) -> bool:
        """Whether the BM25 index exists and its statistics describe the table as it is now.

        "No unindexed rows" is not enough: rows deleted after the build stay in the index's statistics
        (document count, lengths, document frequencies) while Lance reports nothing unindexed. So the index's
        document count must also equal the table's rows; a run killed between deleting rows and rebuilding
        fails this, and the next ingest rebuilds.
        """
        table = self.documents(corpus)
        index = next((i for i in table.list_indices() if i.index_type == "FTS"), None)
        if index is None:
            return False
        stats = table.to_lance().stats.index_stats(index.name)
        documents = sum(segment["num_docs"] for segment in stats["indices"])
        return stats["num_unindexed_rows"] == 0 and documents == table.count_rows()

    def vector_index_lags(self, corpus: str, dim: int, min_rows: int) -> bool:
        """Whether :meth:`ensure_vector_index` has work to do (a run killed before it leaves some)."""
        return self._vector_index_work(self.views(corpus, dim), min_rows) is not None

    def ensure_vector_index(self, corpus: str, dim: int, min_rows: int) -> bool:
        """Build or refresh the ANN index once the corpus has ``min_rows`` views; exact search below that."""
        table = self.views(corpus, dim)
        work = self._vector_index_work(table, min_rows)
        if work == "create":
            log.info("building an ANN index over the views of %s", corpus)
            table.create_index("vector", config=IvfHnswSq(distance_type="cosine"), replace=True)
        elif work == "optimize":
            # New rows are searched exactly until folded into the index; optimize() folds them in.
            table.optimize()
        return table.count_rows() >= min_rows

    @staticmethod
    def _vector_index_work(table: lancedb.table.Table, min_rows: int) -> Literal["create", "optimize"] | None:
        if table.count_rows() < min_rows:
            return None
        index = next((i for i in table.list_indices() if i.columns == ["vector"]), None)
        if index is None:
            return "create"
        stats = table.index_stats(index.name)
        return "optimize" if stats is not None and stats.num_unindexed_rows else None

    # -- search ------------------------------------------------------------------------------------------
    def dense_search(
        self, corpus: str, dim: int, vectors: np.ndarray, limit: int, kinds: Sequence[str] = ("chunk",)
    ) -> list[list[tuple[str, float]]]:
        """Nearest views of ``kinds`` for each query vector: per query, ``(doc_id, cosine)`` best first."""
        query = self.views(corpus, dim).search(list(vectors))
        assert isinstance(query, LanceVectorQueryBuilder)
        result = (
            query.distance_type("cosine")
            .where(f"kind IN ({sql_list(kinds)})", prefilter=True)
            .select(["doc_id", "_distance"])  # named, so Lance need not add it (and warn)
            .limit(limit)
            .to_arrow()
        )
        hits: list[list[tuple[str, float]]] = [[] for _ in range(len(vectors))]
        qidx = (
            result["query_index"].to_pylist()
            if "query_index" in result.column_names
            else [0] * result.num_rows
        )
        for q, doc_id, dist in zip(
            qidx, result["doc_id"].to_pylist(), result["_distance"].to_pylist(), strict=True
        ):
            hits[q].append((doc_id, 1.0 - dist))
        for ranked in hits:
            ranked.sort(key=lambda h: -h[1])
        return hits

    def fts_search(self, corpus: str, text: str | Mapping[str, float], limit: int) -> list[tuple[str, float]]:
        """BM25 hits as ``(doc_id, score)``, best first, for a query text or for weighted words.

        Weighted words score as the sum of weight x BM25 of each (a boolean OR of boosted matches), each
        word analysed like the index (stemmed, stop words dropped).
        """
        query: str | BooleanQuery = (
            text
            if isinstance(text, str)
            # mypy cannot see the defaults of lancedb's pydantic dataclasses
            else BooleanQuery([(Occur.SHOULD, MatchQuery(w, "lexical", boost=b)) for w, b in text.items()])  # type: ignore[call-arg]
        )
        table = self.documents(corpus)
        rows = table.search(query, query_type="fts").select(["doc_id", "_score"]).limit(limit).to_list()
        return [(r["doc_id"], float(r["_score"])) for r in rows]


def now() -> datetime:
    """The current time, timezone-aware (UTC)."""
    return datetime.now(UTC)


def model_key(model: str, passage_prefix: str) -> str:
    """Cache key of a passage-embedding configuration: another prefix embeds the same text differently."""
    return content_hash(model, passage_prefix)[:16]
