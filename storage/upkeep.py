"""Storage upkeep for LanceDB: compact tables and delete old versions, never one a recorded run points at.

Every re-index commits several versions of a corpus's tables (views, rows, deletions, the BM25 index), and
each version keeps its fragments on disk; Lance reclaims nothing by itself (zsr never enables its automatic
cleanup), so disk grows and searches read ever more small fragments.

The retention rule:

- a version of a ``<corpus>__documents`` or ``<corpus>__views__<space>`` table that a published run
  records (``runs.documents_version``, ``runs.views_version`` of that corpus and vector space) is kept,
  so every run can be searched again as of the versions it was measured on. It is kept by a Lance tag,
  ``zsr-run-v<version>``, one per distinct recorded version: tagged versions survive every cleanup, also
  one not started here (LanceDB's ``optimize()`` deletes untagged versions older than 7 days, which is why
  :func:`storage.lance.fold` never calls it), and a tag whose runs were all deleted is removed, which
  releases its version;
- every other version is deleted, except the latest;
- tables no run records (the registry, synthetic queries, the expanded index, whitening fits, embedding
  caches) keep their latest version only.

A run whose version is already gone (deleted before this rule existed, or its table dropped with its
corpus) cannot be searched as it was: :class:`TableUpkeep` names it in ``unreproducible``; upkeep itself
never adds one.

Compaction (``compact_files``) rewrites small fragments into larger ones and drops deleted rows as one new
version, so readers see the same rows before and after; the versions it supersedes go with the cleanup.
Deleting a version's files is safe only when no one reads or writes it: the caller
(:meth:`tasks.workspace.Workspace.gc`) holds each corpus's lease exclusively and passes the corpora it could
not lease as ``in_use``; their tables, and the tables shared by all corpora, are then left alone.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import lance

from storage.compensation import drift_table
from storage.documents import documents_table, expanded_table
from storage.lance import Lance
from storage.lattice import corpus_of_lattice_table
from storage.packs import FolderCompaction
from storage.synthetic import synthetic_table
from storage.views import corpus_of_views_table, views_table_of_key
from storage.whitening import corpus_of_whitening_table

log = logging.getLogger(__name__)

TAG = "zsr-run-v"  # + the version: one tag per distinct recorded version


@dataclass
class TableUpkeep:
    """What upkeep found (dry run) or did (applied) to one table."""

    table: str
    corpus: str | None  # None: shared by every corpus
    versions: int  # on disk before
    versions_removed: int  # (would be) deleted
    versions_after: int  # left on disk (dry run: as it would be, less the version compaction adds)
    kept: list[int]  # versions kept for recorded runs
    fragments: int  # in the latest version before
    fragments_after: int  # after compaction (dry run: as before)
    bytes: int | None  # on disk before (None: not a local folder)
    bytes_reclaimed: int  # measured when applied; dry run: the old versions' files alone
    unreproducible: list[str] = field(default_factory=list)  # runs whose recorded version is gone
    skipped: str | None = None  # why the table was left alone


@dataclass
class UpkeepReport:
    """Everything upkeep found or did: LanceDB tables, warehouse folders, the LLM response cache."""

    applied: bool
    tables: list[TableUpkeep]
    folders: list[FolderCompaction]
    llm_cache: tuple[int, int] | None  # bytes before, after (None: no cache yet)

    @property
    def unreproducible(self) -> list[str]:
        """Runs whose recorded versions are gone (upkeep deletes none; these were gone before)."""
        return sorted({run for t in self.tables for run in t.unreproducible})

    @property
    def bytes_reclaimed(self) -> int:
        """Bytes freed (dry run: at least this many would be)."""
        cache = self.llm_cache[0] - self.llm_cache[1] if self.llm_cache else 0
        folders = sum(f.bytes - f.bytes_after for f in self.folders)
        return sum(t.bytes_reclaimed for t in self.tables) + folders + cache


def recorded_versions(runs: Iterable[Mapping[str, Any]]) -> dict[str, dict[int, list[str]]]:
    """``table -> version -> run ids`` of every version the given ``runs`` rows record.

    Runs written before vector spaces (``vector_space`` null) name no views table that still exists.
    """
    out: dict[str, dict[int, list[str]]] = {}
    for run in runs:
        pairs = [(documents_table(run["corpus"]), run["documents_version"])]
        if run.get("vector_space"):
            pairs.append((views_table_of_key(run["corpus"], run["vector_space"]), run["views_version"]))
        for table, version in pairs:
            if version:
                out.setdefault(table, {}).setdefault(int(version), []).append(run["run_id"])
    return out


def owner(table: str) -> str | None:
    """The corpus a table belongs to; ``None`` for a table every corpus shares (registry, caches)."""
    corpus = (
        corpus_of_views_table(table) or corpus_of_whitening_table(table) or corpus_of_lattice_table(table)
    )
    if corpus is not None or table.startswith("embedcache__"):
        return corpus
    for name in (documents_table, expanded_table, synthetic_table, drift_table):
        suffix = name("")  # "__documents", ...
        if table.endswith(suffix) and table != suffix:
            return table.removesuffix(suffix)
    return None


def upkeep(
    db: Lance,
    recorded: Mapping[str, Mapping[int, list[str]]],
    *,
    in_use: Collection[str],
    apply: bool,
) -> list[TableUpkeep]:
    """Compact every table and delete the versions the retention rule lets go (only with ``apply``).

    Without ``apply`` nothing is written: the result says what would go. Tables of corpora in ``in_use``
    are reported and skipped; so are shared tables while any corpus is in use (any job may read them).
    """
    results = []
    for table in sorted(db.names()):
        corpus = owner(table)
        busy = corpus in in_use if corpus is not None else bool(in_use)
        results.append(_one(db, table, corpus, recorded.get(table, {}), busy, apply))
    # runs of tables no longer there (a corpus deleted since) lost their versions too
    gone = sorted({r for t, vs in recorded.items() if not db.exists(t) for runs in vs.values() for r in runs})
    if gone:
        results.append(TableUpkeep("(dropped tables)", None, 0, 0, 0, [], 0, 0, None, 0, gone, "dropped"))
    return results


def _one(
    db: Lance, name: str, corpus: str | None, recorded: Mapping[int, list[str]], busy: bool, apply: bool
) -> TableUpkeep:
    dataset = db.db.open_table(name).to_lance()
    on_disk = {v["version"] for v in dataset.versions()}
    keep = sorted(v for v in recorded if v in on_disk)
    lost = sorted(r for v, runs in recorded.items() if v not in on_disk for r in runs)
    path = _local_path(db, name)
    result = TableUpkeep(
        table=name,
        corpus=corpus,
        versions=len(on_disk),
        versions_removed=0,
        versions_after=len(on_disk),
        kept=keep,
        fragments=len(dataset.get_fragments()),
        fragments_after=len(dataset.get_fragments()),
        bytes=_size(path),
        bytes_reclaimed=0,
        unreproducible=lost,
    )
    if busy:
        result.skipped = f"corpus {corpus!r} is in use" if corpus else "a corpus is in use"
        return result
    doomed = sorted(on_disk - set(keep) - {dataset.version})
    if not apply:
        if doomed:
            explained = dataset.explain_cleanup_old_versions(
                versions=doomed, delete_unverified=not db.remote, error_if_tagged_old_versions=False
            )
            result.bytes_reclaimed = explained.stats.bytes_removed
        result.versions_removed = len(doomed)
        result.versions_after = len(on_disk) - len(doomed)
        return result
    _retag(dataset, keep)
    dataset.optimize.compact_files(target_rows_per_fragment=_largest(dataset))
    dataset = db.dataset(dataset.uri)  # the compacted version is the latest now
    doomed = sorted({v["version"] for v in dataset.versions()} - set(keep) - {dataset.version})
    if doomed:
        # delete_unverified: no one holds the table (see the module docstring), so files of a transaction
        # that never committed are leftovers of a killed writer, not work in progress. Not on object
        # storage, where a writer on another machine holds no lease here (storage.object_store).
        stats = dataset.cleanup_old_versions(
            older_than=timedelta(0),
            versions=doomed,
            delete_unverified=not db.remote,
            error_if_tagged_old_versions=False,
        )
        log.debug("cleanup of %s: %s", name, stats)
        result.versions_removed = len(doomed)
    result.versions_after = len(dataset.versions())
    result.fragments_after = len(dataset.get_fragments())
    after = _size(path)
    result.bytes_reclaimed = result.bytes - after if result.bytes is not None and after is not None else 0
    log.info("upkeep %s: %d versions deleted, %d kept for runs", name, result.versions_removed, len(keep))
    return result


def _largest(dataset: lance.LanceDataset) -> int:
    """Rows of the largest fragment: compaction merges the smaller ones and leaves it whole.

    A recorded version pins the fragments it reads, so rewriting a big fragment only to merge a night's few
    rows into it would keep two copies of it for as long as that run exists, a full copy more every night.
    Merging only the smaller fragments costs the size of the nights' changes; a big fragment is still
    rewritten once its deleted rows pass Lance's threshold (10%), which is when rewriting it pays.
    """
    return max((f.metadata.physical_rows for f in dataset.get_fragments()), default=0) or 1_048_576


def _retag(dataset: lance.LanceDataset, keep: Collection[int]) -> None:
    """Tag exactly the recorded versions ``keep``; tags of versions no run records any more go."""
    tags = {name: info["version"] for name, info in dataset.tags.list().items() if name.startswith(TAG)}
    for name, version in tags.items():
        if version not in keep:
            dataset.tags.delete(name)
    for version in keep:
        if f"{TAG}{version}" not in tags:
            dataset.tags.create(f"{TAG}{version}", version)


def _local_path(db: Lance, name: str) -> Path | None:
    return None if db.remote else Path(db.uri) / f"{name}.lance"


def _size(path: Path | None) -> int | None:
    """Bytes under a table's folder (``None`` for a table not on local disk)."""
    if path is None:
        return None
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
