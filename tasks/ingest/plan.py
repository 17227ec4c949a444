"""The planning pass of a re-index: what to write, read from the source without holding it.

:func:`tasks.ingest.index.reindex` reads its documents twice. This first pass keeps ids only (each
document's content hash is compared with the stored one as it passes), plus the metadata of a few
documents, enough to infer the metadata columns (and so to refuse a conflict before anything is written);
the second pass writes the planned documents in :func:`batches`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from storage.metadata import Fields, infer_fields
from storage.types import BadInputError, Document


@dataclass
class Plan:
    """What the planning pass over the source found: ids and counts, no text."""

    present: set[str] = field(default_factory=set)  # every source id
    todo: set[str] = field(default_factory=set)  # ids of the new, changed and broken documents
    changed: int = 0  # documents stored with another content hash
    count: int = 0  # source documents
    samples: list[Document] = field(default_factory=list)  # see plan_documents


def plan_documents(documents: Iterable[Document], stored: Mapping[str, str], broken: Collection[str]) -> Plan:
    """The first pass: which documents to write, and samples of their metadata to infer the columns from.

    A sample (its metadata, no text) is kept for each document to write that shows a metadata key with a
    value type no earlier one showed. The first value of every key and type is what decides the columns
    and whether any value conflicts, so the samples give the fields all the documents give.
    """
    plan = Plan()
    shown: set[tuple[str, type]] = set()
    for doc in documents:
        plan.count += 1
        plan.present.add(doc.doc_id)
        stored_hash, doc_hash = stored.get(doc.doc_id), doc.content_hash
        if stored_hash == doc_hash and doc.doc_id not in broken:
            continue
        plan.todo.add(doc.doc_id)
        plan.changed += stored_hash not in (None, doc_hash)
        kinds = {(key, type(value)) for key, value in doc.metadata.items()}
        if not kinds <= shown:
            shown |= kinds
            plan.samples.append(_metadata_of(doc))
    return plan


def planned_fields(
    documents: Iterable[Document], plan: Plan, repairs: list[Document], known: Fields
) -> Fields:
    """The metadata columns to write the planned documents with (see :func:`infer_fields`).

    Raises:
        BadInputError: a value conflicts with its key's column; every such record is named, as a
            refused source lists all its bad records (only then is the source read a third time).
    """
    try:
        return infer_fields([*plan.samples, *repairs], known)
    except BadInputError:
        planned = (_metadata_of(d) for d in documents if d.doc_id in plan.todo)
        return infer_fields([*planned, *repairs], known)


def _metadata_of(doc: Document) -> Document:
    """``doc`` without its text: what metadata inference reads of it."""
    return Document(doc.doc_id, "", "", doc.metadata, doc.location)


def batches(documents: Iterable[Document], size: int) -> Iterator[list[Document]]:
    """``documents`` in lists of ``size`` (the last one shorter), taken from the iterable only as needed."""
    batch: list[Document] = []
    for doc in documents:
        batch.append(doc)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
