"""Register human test sets per corpus as validated copies: later edits of the originals never shift scores.

A registered set lives in ``<root>/<corpus>/<name>/`` in BEIR layout (``queries.jsonl``, ``qrels/test.tsv``)
plus ``testset.json`` (provenance and a content hash). It is read back with the evaluation loaders, and its
hash is checked on every load, so an edited copy fails loudly instead of changing scores silently.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from storage.corpus_store import CorpusStore
from storage.ids import canonical_json, content_hash, untrec_id
from storage.lance import now
from storage.registry import CORPUS_NAME
from storage.types import BadInputError, Problem, Qrels
from tasks.evaluation.measures import load_qrels, load_queries
from tasks.ingest.formats import TestSetFormat

logger = logging.getLogger(__name__)

_LISTED = ("corpus", "name", "kind", "n_queries", "n_qrels", "created_at", "source")
_EXAMPLES = 5


@dataclass(frozen=True)
class TestSet:
    """A registered test set: only queries with both text and judgements; ``content_hash`` is provenance."""

    corpus: str
    name: str
    queries: dict[str, str]
    qrels: Qrels
    content_hash: str
    source: str
    created_at: str
    kind: str


@dataclass
class ValidationReport:
    """What a test set holds as read (``n_queries``, ``n_qrels``) and what was dropped or is unreachable."""

    n_queries: int
    n_qrels: int
    n_judged_queries: int
    missing_docs: list[tuple[str, str]]
    unjudged_queries: list[str]
    queries_without_text: list[str]
    warnings: list[str]


class UnknownTestSetError(LookupError):
    """No test set of that name is registered for the corpus."""


def read_testset_files(
    path: Path, *, fmt: TestSetFormat | None = None, split: str = "test", queries: Path | None = None
) -> tuple[dict[str, str], Qrels]:
    """Read queries and qrels from a BEIR folder, or from a TREC qrels file plus a queries file.

    Args:
        path: A BEIR folder (``queries.jsonl``, ``qrels/<split>.tsv``) or a TREC qrels file.
        fmt: ``"beir"`` or ``"trec"``; a folder is read as BEIR and a file as TREC when ``None``.
        split: The BEIR qrels split.
        queries: The queries file (``.jsonl`` as in BEIR, or ``.tsv``: query-id TAB text); required for TREC,
            and overrides the folder's ``queries.jsonl`` for BEIR.

    Raises:
        BadInputError: a file is missing or unreadable, or has malformed lines, duplicate query ids or
            conflicting grades (every problem of the file, each with its ``file:line``).
    """
    if not path.exists():
        raise _fatal(path, "does not exist", f"check the path (relative to {Path.cwd()})")
    fmt = fmt or _detect(path)
    if fmt not in ("beir", "trec"):
        raise _fatal(
            path, f"unknown test set format {fmt!r}", "use beir or trec, or leave it out to detect it"
        )
    if fmt == "beir":
        qrels_path = path / "qrels" / f"{split}.tsv"
        if not qrels_path.is_file():
            splits = ", ".join(sorted(p.stem for p in (path / "qrels").glob("*.tsv"))) or "none"
            raise _fatal(qrels_path, "not found", f"pick a split that exists (found: {splits})")
        queries = queries or path / "queries.jsonl"
    elif queries is None:
        raise _fatal(path, "TREC qrels hold no query texts", "pass the queries file (.jsonl or .tsv) too")
    return _read_queries(queries), _read_qrels(qrels_path if fmt == "beir" else path, trec=fmt == "trec")


def validate(
    queries: dict[str, str],
    qrels: Qrels,
    corpus_doc_ids: set[str],
    *,
    location: str,
    corpus: str | None = None,
) -> ValidationReport:
    """Check a test set against its corpus; the report lists what register drops and what stays unfindable.

    Judged documents absent from the corpus stay in the qrels: dropping them would inflate recall.

    Raises:
        BadInputError: no query has both text and a judgement, or no judged document is in the corpus.
    """
    judged = [q for q in qrels if q in queries]
    if not judged:
        raise _fatal(
            location,
            f"no query has both text and a judgement ({len(queries)} queries, {len(qrels)} judged query ids)",
            "make the query ids of the queries file match those of the qrels",
        )
    pairs = [(q, d) for q in judged for d in qrels[q]]
    missing = [(q, d) for q, d in pairs if d not in corpus_doc_ids]
    target = f"corpus {corpus!r}" if corpus else "the corpus"
    shown = _examples([f"{d} (query {q})" for q, d in missing])
    if len(missing) == len(pairs):
        raise _fatal(
            location,
            f"none of the {len(pairs)} judged documents is in {target} (e.g. {shown})",
            f"does this test set belong to {target}? register it for the corpus holding its documents",
        )
    unjudged = [q for q in queries if q not in qrels]
    textless = [q for q in qrels if q not in queries]
    notes = [
        (
            missing,
            f"{len(missing)} of {len(pairs)} judgements name documents not in {target} (e.g. {shown}); "
            "kept, as misses: ingest those documents if they belong there",
        ),
        (unjudged, f"{len(unjudged)} queries have no judgements; dropped (e.g. {_examples(unjudged)})"),
        (
            textless,
            f"{len(textless)} judged queries have no text; dropped (e.g. {_examples(textless)}); "
            "add their texts to the queries file to keep them",
        ),
    ]
    warnings = [f"{location}: {note}" for items, note in notes if items]
    n_qrels = sum(map(len, qrels.values()))
    return ValidationReport(len(queries), n_qrels, len(judged), missing, unjudged, textless, warnings)


def register(
    root: Path,
    store: CorpusStore,
    corpus: str,
    name: str,
    path: Path,
    *,
    fmt: TestSetFormat | None = None,
    split: str = "test",
    queries: Path | None = None,
    replace: bool = False,
    kind: str = "human",
) -> tuple[TestSet, ValidationReport]:
    """Validate a test set against ``corpus`` and store a copy of it as ``<root>/<corpus>/<name>/``.

    The copy is written into a temporary folder beside the target and renamed into place, so a crash
    leaves either the old set or the new one, never half of one.

    Raises:
        UnknownCorpusError: ``corpus`` was never ingested (checked before anything is read).
        ValueError: ``name`` is not a valid name, or is already registered for ``corpus`` without ``replace``.
        BadInputError: the files are malformed or the set is unusable for this corpus.
    """
    store.registry.corpus(corpus)
    if not CORPUS_NAME.match(name):
        raise ValueError(
            f"test set name {name!r} is not allowed; use 1-64 letters, digits, '-' or '_' "
            "starting with a letter or digit"
        )
    target = root / corpus / name
    if target.exists() and not replace:
        raise ValueError(
            f"test set {name!r} is already registered for corpus {corpus!r} at {target}; "
            "pass replace=True (--replace) to overwrite it, or choose another name"
        )
    fmt = fmt or _detect(path)
    raw_queries, raw_qrels = read_testset_files(path, fmt=fmt, split=split, queries=queries)
    report = validate(
        raw_queries, raw_qrels, set(store.documents.hashes(corpus)), location=str(path), corpus=corpus
    )
    kept = {q: text for q, text in raw_queries.items() if q in raw_qrels}
    qrels = {q: judgements for q, judgements in raw_qrels.items() if q in kept}
    created = now().isoformat(timespec="seconds")
    testset = TestSet(corpus, name, kept, qrels, _digest(kept, qrels), str(path.resolve()), created, kind)
    provenance = {"format": fmt, "split": split, "queries": str(queries.resolve()) if queries else None}
    _write_atomically(target, testset, provenance)
    logger.info("registered test set %s/%s with %d queries", corpus, name, len(kept))
    return testset, report


def load(root: Path, corpus: str, name: str) -> TestSet:
    """The registered test set ``name`` of ``corpus``, checked against its content hash.

    Raises:
        UnknownTestSetError: none of that name is registered (the message lists those that are).
        BadInputError: the stored copy was edited after registration.
    """
    folder = root / corpus / name
    if not (folder / "testset.json").is_file():
        known = ", ".join(t["name"] for t in list_testsets(root, corpus)) or "none yet"
        raise UnknownTestSetError(
            f"test set {name!r} is not registered for corpus {corpus!r} under {root} (known: {known}); "
            "register it first"
        )
    meta = json.loads((folder / "testset.json").read_text(encoding="utf-8"))
    queries = load_queries(folder / "queries.jsonl")
    qrels = load_qrels(folder / "qrels" / "test.tsv")
    digest = _digest(queries, qrels)
    if digest != meta["content_hash"]:
        raise _fatal(
            folder,
            "was edited after registration (content hash differs)",
            "register the original files again with replace",
        )
    return TestSet(corpus, name, queries, qrels, digest, meta["source"], meta["created_at"], meta["kind"])


def list_testsets(root: Path, corpus: str | None = None) -> list[dict[str, Any]]:
    """Registered test sets (of one corpus, or all), sorted by corpus and name."""
    metas = [
        json.loads(p.read_text(encoding="utf-8"))
        for p in sorted(root.glob(f"{corpus or '*'}/*/testset.json"))
    ]
    return [{key: meta[key] for key in _LISTED} for meta in metas]


class TestSets:
    """The test sets registered under one folder: what every front end registers, lists and loads."""

    def __init__(self, root: Path, store: Callable[[], CorpusStore]) -> None:
        """``store`` is opened only to register (a listing needs no corpus)."""
        self.root, self._store = root, store

    def register(
        self, corpus: str, name: str, path: Path, **options: Any
    ) -> tuple[TestSet, ValidationReport]:
        """:func:`register` into this folder (``options``: its keyword arguments)."""
        return register(self.root, self._store(), corpus, name, path, **options)

    def load(self, corpus: str, name: str) -> TestSet:
        """:func:`load` from this folder."""
        return load(self.root, corpus, name)

    def listing(self, corpus: str | None = None) -> list[dict[str, Any]]:
        """:func:`list_testsets` of this folder."""
        return list_testsets(self.root, corpus)

    def names(self, corpus: str) -> list[str]:
        """Names of the test sets registered for ``corpus``."""
        return [t["name"] for t in list_testsets(self.root, corpus)]

    def remove(self, corpus: str, name: str) -> Path:
        """Delete a registered test set; returns the folder it was in.

        The folder is first renamed under ``<root>/.trash/`` (one atomic step: the set is gone from every
        listing and load), then deleted; trash a killed delete left behind is deleted on the next one.

        Raises:
            UnknownTestSetError: no test set ``name`` is registered for ``corpus``.
        """
        folder = self.root / corpus / name
        if "/" in corpus + name or not (folder / "testset.json").is_file():
            known = ", ".join(self.names(corpus)) if "/" not in corpus else ""
            raise UnknownTestSetError(
                f"test set {name!r} is not registered for corpus {corpus!r} under {self.root} "
                f"(known: {known or 'none'})"
            )
        # Three levels down, so the `<corpus>/<name>/testset.json` glob of listings never sees it.
        trash = self.root / ".trash" / f"{time.time_ns()}-{os.getpid()}" / corpus / name
        trash.parent.mkdir(parents=True)
        folder.rename(trash)
        for leftover in (self.root / ".trash").iterdir():
            shutil.rmtree(leftover, ignore_errors=True)
        return folder


def _detect(path: Path) -> TestSetFormat:
    return "beir" if path.is_dir() else "trec"


def _digest(queries: dict[str, str], qrels: Qrels) -> str:
    return content_hash(canonical_json(queries), canonical_json(qrels))


def _write_atomically(target: Path, testset: TestSet, provenance: dict[str, Any]) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    # A hidden work folder on the same filesystem makes each rename atomic; list_testsets never sees it.
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    new, old = work / "new", work / "old"
    try:
        (new / "qrels").mkdir(parents=True)
        with (new / "queries.jsonl").open("w", encoding="utf-8") as out:
            for qid, text in sorted(testset.queries.items()):
                out.write(json.dumps({"_id": qid, "text": text}, ensure_ascii=False) + "\n")
        rows = [
            f"{q}\t{d}\t{g}\n" for q in sorted(testset.qrels) for d, g in sorted(testset.qrels[q].items())
        ]
        (new / "qrels" / "test.tsv").write_text(
            "query-id\tcorpus-id\tscore\n" + "".join(rows), encoding="utf-8"
        )
        meta = {
            **{key: getattr(testset, key) for key in ("corpus", "name", "kind", "created_at", "source")},
            "n_queries": len(testset.queries),
            "n_qrels": len(rows),
            "content_hash": testset.content_hash,
            **provenance,
        }
        (new / "testset.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", "utf-8")
        # POSIX cannot rename over a non-empty folder, so a replaced set steps aside first.
        if target.exists():
            target.rename(old)
        new.rename(target)
    except BaseException:
        if old.exists() and not target.exists():
            old.rename(target)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _lines(path: Path) -> Iterator[tuple[str, str]]:
    """Non-blank lines of a UTF-8 text file as (``file:line``, line)."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: Excel and Notepad add a byte-order mark
    except (OSError, UnicodeDecodeError) as err:
        raise _fatal(path, f"cannot read: {err}", "check the path, and that the file is UTF-8 text") from err
    for number, line in enumerate(text.split("\n"), start=1):
        if line.strip():
            yield f"{path}:{number}", line.rstrip("\r")


def _read_queries(path: Path) -> dict[str, str]:
    tsv = path.suffix.lower() == ".tsv"
    if not tsv and path.suffix.lower() != ".jsonl":
        raise _fatal(path, "unsupported queries file", "give a .jsonl (BEIR queries) or a .tsv (id<TAB>text)")
    shape = "query-id<TAB>text" if tsv else '{"_id": "q1", "text": "..."}'
    queries: dict[str, str] = {}
    first: dict[str, str] = {}
    problems: list[Problem] = []
    for where, line in _lines(path):
        qid, text = _query_fields(line, tsv)
        if not qid or not text:
            problems.append(Problem(where, "no query id and text found", f"write each query as {shape}"))
        elif qid in first:
            message = f"duplicate query id (first at {first[qid]})"
            problems.append(Problem(where, message, "remove or renumber one of the two", qid))
        else:
            first[qid], queries[qid] = where, text
    if problems:
        raise BadInputError(problems)
    return queries


def _query_fields(line: str, tsv: bool) -> tuple[str, str]:
    if tsv:
        qid, _, text = line.partition("\t")
        return qid.strip(), text.strip()
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return "", ""
    if not isinstance(record, dict) or record.get("_id") is None or not isinstance(record.get("text"), str):
        return "", ""
    return str(record["_id"]).strip(), record["text"].strip()


def _read_qrels(path: Path, *, trec: bool) -> Qrels:
    width, shape = (4, "query-id iteration doc-id grade") if trec else (3, "query-id<TAB>doc-id<TAB>grade")
    qrels: Qrels = {}
    first: dict[tuple[str, str], str] = {}
    problems: list[Problem] = []
    for index, (where, line) in enumerate(_lines(path)):
        fields = line.split() if trec else [field.strip() for field in line.split("\t")]
        # BEIR qrels open with a header; a hand-made file may not, and its first judgement must not be lost.
        if not trec and index == 0 and len(fields) == width and not _is_int(fields[-1]):
            continue
        shaped = len(fields) == width and all(fields)
        if not shaped or not _is_int(fields[-1]):
            found = sum(map(bool, fields))
            what = "grade is not an integer" if shaped else f"expected {width} columns, found {found}"
            problems.append(Problem(where, what, f"write each judgement as {shape}, with an integer grade"))
            continue
        qid, doc_id, grade = fields[0], fields[-2], int(fields[-1])
        if trec:  # as `zsr export` writes ids holding whitespace or "%"
            qid, doc_id = untrec_id(qid), untrec_id(doc_id)
        first.setdefault((qid, doc_id), where)
        kept = qrels.setdefault(qid, {}).setdefault(doc_id, grade)
        if kept != grade:
            problems.append(
                Problem(
                    where,
                    f"{doc_id!r} graded {grade} here, {kept} at {first[qid, doc_id]}",
                    "keep one grade per query and document",
                    qid,
                )
            )
    if problems:
        raise BadInputError(problems)
    if not qrels:
        raise _fatal(path, "holds no judgements (the file is empty)", f"write one judgement a line: {shape}")
    return qrels


def _is_int(text: str) -> bool:
    return text.removeprefix("-").isdecimal()


def _examples(items: list[str]) -> str:
    return ", ".join(items[:_EXAMPLES]) + (", ..." if len(items) > _EXAMPLES else "")


def _fatal(location: Path | str, message: str, fix: str) -> BadInputError:
    return BadInputError([Problem(str(location), message, fix)])
