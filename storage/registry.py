"""The corpora registry: a row per corpus naming its active vector space; whether a first ingest ended.

A corpus is registered by its first ingest once its documents table exists and before any view is written
(see :func:`tasks.ingest.index.reindex`), so a run stopped anywhere in between leaves a state that
:meth:`Registry.incomplete` recognises and names.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import pyarrow as pa

from storage.documents import Documents, documents_table
from storage.lance import Lance, sql_list
from storage.vector_space import VectorSpace
from storage.views import Views, corpus_of_views_table

CORPUS_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
REGISTRY = "corpora"
REGISTRY_SCHEMA = pa.schema(
    [
        pa.field("name", pa.string(), nullable=False),
        pa.field("space", pa.string()),  # the active vector space, as VectorSpace.to_json writes it
        pa.field("dim", pa.int32()),
        pa.field("source", pa.string()),
        pa.field("created_at", pa.timestamp("us", tz="UTC")),
        pa.field("updated_at", pa.timestamp("us", tz="UTC")),
    ]
)
MIGRATE_HINT = "run `zsr migrate` to upgrade it (back up $ZSR_HOME first)"


@dataclass(frozen=True, slots=True)
class CorpusInfo:
    """A registered corpus: the vector space it is searched in (its active space) and its dimension."""

    name: str
    space: VectorSpace
    dim: int
    source: str
    created_at: datetime
    updated_at: datetime

    def as_row(self) -> dict[str, Any]:
        """A flat row for listings: the space's model, prefixes and key beside the corpus's own fields."""
        return {
            "name": self.name,
            "model": self.space.model,
            "space": self.space.key,
            "revision": self.space.revision,
            "query_prefix": self.space.query_prefix,
            "passage_prefix": self.space.passage_prefix,
            "dim": self.dim,
            "source": self.source,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


class UnknownCorpusError(LookupError):
    """The corpus was never ingested."""


class IncompleteCorpusError(LookupError):
    """A corpus's first ingest stopped before it finished (killed, or failed); re-running it completes it."""


class OutdatedRegistryError(ValueError):
    """The registry was written by an older zsr (home format 1); reading it as it is would misread it."""


def check_name(name: str) -> str:
    """Validate a corpus name (it becomes part of table names)."""
    if not CORPUS_NAME.match(name):
        raise ValueError(
            f"corpus name {name!r} is not allowed; use 1-64 letters, digits, '-' or '_' "
            "starting with a letter or digit"
        )
    return name


class Registry:
    """Registered corpora, and the incomplete state a stopped first ingest leaves."""

    def __init__(self, lance: Lance, documents: Documents, views: Views) -> None:
        self.lance = lance
        self.documents = documents
        self.views = views

    def corpora(self) -> list[CorpusInfo]:
        """Every registered corpus, by name.

        Raises:
            OutdatedRegistryError: the registry has the layout of home format 1.
        """
        if not self.lance.exists(REGISTRY):
            return []
        table = self.lance.open(REGISTRY)
        if "space" not in table.schema.names:
            raise OutdatedRegistryError(
                f"the corpora registry in {self.lance.uri} was written by zsr format 1; {MIGRATE_HINT}"
            )
        rows = table.to_arrow().to_pylist()
        infos = (CorpusInfo(**{**row, "space": VectorSpace.from_json(row["space"])}) for row in rows)
        return sorted(infos, key=lambda c: c.name)

    def get(self, name: str) -> CorpusInfo | None:
        """The registry row of ``name``, or ``None`` (complete or not: see :meth:`corpus`)."""
        return next((info for info in self.corpora() if info.name == name), None)

    def corpus(self, name: str) -> CorpusInfo:
        """The registered corpus ``name``, or an error that lists the ones that exist.

        Raises:
            IncompleteCorpusError: the corpus's first ingest did not finish, so its tables cannot be searched.
            UnknownCorpusError: no ingest of the corpus ever started.
        """
        corpora = self.corpora()
        reason = self._incomplete(name, next((c for c in corpora if c.name == name), None))
        if reason is not None:
            raise IncompleteCorpusError(
                f"corpus {name!r} is incomplete ({reason}): its first ingest did not finish; "
                f"re-run the ingest: `zsr ingest SOURCE --corpus {name}`"
            )
        for info in corpora:
            if info.name == name:
                return info
        known = ", ".join(c.name for c in corpora) or "none yet"
        raise UnknownCorpusError(
            f"corpus {name!r} was never ingested into {self.lance.uri} (known: {known}); "
            f"run `zsr ingest SOURCE --corpus {name}` first"
        )

    def register(self, info: CorpusInfo) -> None:
        """Insert or update the registry row of a corpus."""
        rows = pa.Table.from_pylist([asdict(info) | {"space": info.space.to_json()}], REGISTRY_SCHEMA)
        table = self.lance.open_or_create(REGISTRY, REGISTRY_SCHEMA)
        table.merge_insert("name").when_matched_update_all().when_not_matched_insert_all().execute(rows)

    def unregister(self, name: str) -> None:
        """Delete the registry row of ``name`` (one commit; nothing when there is none)."""
        if self.lance.exists(REGISTRY):
            self.lance.open(REGISTRY).delete(f"name = {sql_list([name])}")

    def incomplete(self, name: str) -> str | None:
        """Why the first ingest of ``name`` looks unfinished, or ``None``.

        A first ingest creates the documents table while diffing, registers the corpus, writes views and rows
        batch by batch and builds the BM25 index last; a run stopped anywhere in between leaves one of the
        states below. A later re-index that stops keeps the earlier, complete tables and index.
        """
        return self._incomplete(name, self.get(name))

    def _incomplete(self, name: str, info: CorpusInfo | None) -> str | None:
        has_documents = self.lance.exists(documents_table(name))
        if info is None:
            views = any(corpus_of_views_table(table) == name for table in self.lance.names())
            return "its tables exist but it was never registered" if has_documents or views else None
        missing = [
            kind
            for kind, present in (
                ("documents", has_documents),
                ("views", self.views.exists(name, info.space)),
            )
            if not present
        ]
        if missing:
            return f"its {' and '.join(missing)} table{'s are' if len(missing) == 2 else ' is'} missing"
        if not self.documents.fts_built(name):
            return "its BM25 index was never built"
        return None

    def incomplete_corpora(self) -> dict[str, str]:
        """``name -> reason`` for every corpus, registered or not, whose first ingest did not finish."""
        corpora = {info.name: info for info in self.corpora()}
        tables = self.lance.names()
        names = set(corpora) | {t.removesuffix("__documents") for t in tables if t.endswith("__documents")}
        names |= {corpus for corpus in map(corpus_of_views_table, tables) if corpus is not None}
        found = {name: self._incomplete(name, corpora.get(name)) for name in sorted(names)}
        return {name: reason for name, reason in found.items() if reason is not None}
