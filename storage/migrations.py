"""The steps between home formats, one function per step; :mod:`storage.home` decides which to run.

Every step is idempotent and safe to kill at any point: it reads what is on disk to see what is left to do,
never a note of its own progress. Data is copied to its new place first, the switch is one commit, and what
the old format alone could read is dropped last; so a step killed anywhere and run again ends as one that
ran through.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import pyarrow as pa

from storage.documents import documents_table, expanded_table
from storage.embedding_cache import cache_table
from storage.ids import content_hash
from storage.lance import Lance
from storage.metadata import PREFIX, settled_fields, with_metadata
from storage.registry import REGISTRY, REGISTRY_SCHEMA
from storage.vector_space import VectorSpace, with_space
from storage.views import Views, corpus_of_views_table, views_table

# Format 1 names: a corpus's only views table, and a cache table per (model, prefix).
_V1_VIEWS = "__views"
_V1_CACHE = re.compile(r"^embedcache__[0-9a-f]{16}$")

SpaceOf = Callable[[str, str, str], VectorSpace]  # (model, query prefix, passage prefix) -> its space
Progress = Callable[[str], None]  # told each action once it is done


def v1_layout(lance: Lance) -> bool:
    """Whether the database still holds anything in format 1's layout (all of it, or what a kill left)."""
    names = lance.names()
    if any(name.endswith(_V1_VIEWS) or _V1_CACHE.match(name) for name in names):
        return True
    return REGISTRY in names and "space" not in lance.db.open_table(REGISTRY).schema.names


def v1_to_v2(lance: Lance, space_of: SpaceOf, progress: Progress | None = None) -> list[str]:
    """Give each corpus its vector space: views and cache tables keyed by it, the registry naming it.

    1. For each corpus in a format-1 registry: copy ``<corpus>__views`` to ``<corpus>__views__<key>``
       (its ANN index rebuilt, if it had one) and its two cache tables, ``embedcache__<hash(model,
       prefix)>``, to ``embedcache__<key>__passage`` and ``embedcache__<key>__query``. A copy is one
       commit; one already complete (same row count) is kept, a half-written one is dropped and redone.
    2. Rewrite the registry with each corpus's space (one commit): from here on the database reads as
       format 2, and step 1 is never run again.
    3. Drop every format-1 views and cache table (cache tables no corpus used have no space to go to).

    Returns what was done, in order (an empty list: nothing was left to do).
    """
    actions: list[str] = []
    done = _recorder(actions, progress)

    names = set(lance.names())
    registry = lance.db.open_table(REGISTRY) if REGISTRY in names else None
    if registry is not None and "space" not in registry.schema.names:
        rows = registry.to_arrow().to_pylist()
        for row in rows:
            row["space"] = space_of(row["model"], row["query_prefix"], row["passage_prefix"])
            copies = [(f"{row['name']}{_V1_VIEWS}", views_table(row["name"], row["space"]))] + [
                (_v1_cache_table(row["model"], row[f"{role}_prefix"]), cache_table(row["space"], role))
                for role in ("passage", "query")
            ]
            for source, target in copies:
                if source in names and _copy(lance, source, target, row["space"]):
                    done(f"copied {source} to {target}")
            if _index_views(lance, row["name"], row["space"]):
                done(f"built the ANN index of {views_table(row['name'], row['space'])}")
        v2 = [{**row, "space": row["space"].to_json()} for row in rows]
        lance.db.create_table(REGISTRY, pa.Table.from_pylist(v2, REGISTRY_SCHEMA), mode="overwrite")
        done(f"recorded the vector space of {len(rows)} corpora in the registry")
    for name in sorted(lance.names()):
        if name.endswith(_V1_VIEWS) or _V1_CACHE.match(name):
            lance.db.drop_table(name)
            done(f"dropped {name}")
    return actions


def _recorder(actions: list[str], progress: Progress | None) -> Progress:
    """Appends each action to ``actions`` and reports it to ``progress``."""

    def done(action: str) -> None:
        actions.append(action)
        if progress:
            progress(action)

    return done


def _v1_cache_table(model: str, prefix: str) -> str:
    """The cache table format 1 kept for a model and one prefix (both roles shared it when equal)."""
    return f"embedcache__{content_hash(model, prefix)[:16]}"


def _copy(lance: Lance, source: str, target: str, space: VectorSpace) -> bool:
    """Copy table ``source`` to ``target`` in one commit, ``space`` in its metadata; ``False``: already done.

    A target that cannot be opened, or holds another number of rows, is what a kill during the copy left
    (Lance lists a table whose first commit never landed): it is dropped and the copy redone.
    """
    rows = lance.db.open_table(source)
    if lance.exists(target):
        try:
            if lance.db.open_table(target).count_rows() == rows.count_rows():
                return False
        except ValueError:  # listed, but its first commit never landed
            pass
        lance.db.drop_table(target)
    lance.db.create_table(
        target, data=rows.to_lance().scanner().to_reader(), schema=with_space(rows.schema, space)
    )
    return True


def _index_views(lance: Lance, corpus: str, space: VectorSpace) -> bool:
    """Rebuild on the copy the ANN index the format-1 views table had (indexes are not copied with rows)."""
    source = f"{corpus}{_V1_VIEWS}"
    views = Views(lance)
    if not lance.exists(source) or not views.exists(corpus, space):
        return False
    indexed = any(i.columns == ["vector"] for i in lance.db.open_table(source).list_indices())
    return (
        indexed and views.vector_index_lags(corpus, space, 0) and views.ensure_vector_index(corpus, space, 0)
    )


def v2_to_v3(lance: Lance, progress: Progress | None = None) -> list[str]:
    """Give each corpus typed metadata columns (``meta__<key>``, :mod:`storage.metadata`) for ``--where``.

    1. Each documents table gets a column per filterable key of its ``metadata`` JSON, filled from it (one
       Lance merge by ``doc_id``: one commit, indexes kept). A key whose stored values disagree in type is
       left in the JSON only, and said so.
    2. Each views table (every vector space) and the expanded table of the corpus get the same columns,
       copied from the documents table by ``doc_id`` (one merge each).

    A table that has its columns already is skipped, so a run killed anywhere and run again ends the same.
    The format record (written by :func:`storage.home.migrate` after this) is the switch. Returns what was
    done, in order.
    """
    actions: list[str] = []
    done = _recorder(actions, progress)

    names = set(lance.names())
    suffix = documents_table("")
    for corpus in sorted(n.removesuffix(suffix) for n in names if n.endswith(suffix)):
        documents = lance.db.open_table(documents_table(corpus))
        stored = documents.to_arrow().select(["doc_id", "metadata"])
        metadata = [json.loads(m or "{}") for m in stored["metadata"].to_pylist()]
        fields, mixed = settled_fields(metadata)
        if mixed:
            done(f"left {', '.join(mixed)} of {corpus} unfilterable: their stored values differ in type")
        if not fields:
            continue
        columns = with_metadata(stored.select(["doc_id"]), metadata, fields)
        targets = [
            documents_table(corpus),
            *sorted(n for n in names if corpus_of_views_table(n) == corpus),
            *([expanded_table(corpus)] if expanded_table(corpus) in names else []),
        ]
        for name in targets:
            table = lance.db.open_table(name)
            missing = [c for c in columns.column_names[1:] if c not in table.schema.names]
            if missing:
                table.to_lance().merge(columns.select(["doc_id", *missing]), left_on="doc_id")
                keys = ", ".join(c.removeprefix(PREFIX) for c in missing)
                done(f"added the metadata columns of {keys} to {name}")
    return actions
