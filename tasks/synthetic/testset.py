"""Synthetic test sets: queries written from diverse documents, pooled results of several methods judged.

The pool is judged, not only the source document: synthetic queries with only their source passage as
relevant ranked systems with Kendall tau 0.157 against human judgements, LLM-judged depth-10 pools 0.857
(Rahmani et al., SIGIR 2024; METHODS.md). Absolute scores come out inflated; compare methods on a synthetic
set, and measure its agreement with human qrels (:func:`agreement`) wherever they exist.

Idempotency: queries have content-derived ids and are generated once, and LLM judgements are cached, so a
rerun with ``replace=True`` rebuilds the same set without new LLM calls.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from scipy.stats import kendalltau

from storage.corpus_store import CorpusStore
from storage.warehouse import SCHEMAS, Warehouse
from tasks.evaluation.measures import parse_measures
from tasks.evaluation.runs import evaluate_methods, new_id
from tasks.evaluation.testsets import TestSet, register
from tasks.llm.judge import Judge, Judgement
from tasks.methods.search import Searcher
from tasks.synthetic.generate import Filters, document_vectors, sample_documents, synthesize
from tasks.synthetic.generators import Generator

log = logging.getLogger(__name__)


@dataclass
class SyntheticReport:
    """What building a synthetic test set did; ``dropped_queries`` had no document judged relevant."""

    testset: str
    generator: str
    judge: str
    queries: int = 0
    pooled_pairs: int = 0
    judged: int = 0
    failed: int = 0
    relevant_pairs: int = 0
    mean_relevant_per_query: float = 0.0
    dropped_queries: int = 0


@dataclass
class AgreementResult:
    """How far a synthetic test set ranks methods as the human one does (one ``agreements`` row)."""

    corpus: str
    human_testset: str
    synthetic_testset: str
    measure: str
    methods: list[str]
    human_scores: dict[str, float]
    synthetic_scores: dict[str, float]
    kendall_tau: float
    p_value: float
    top1_agree: bool
    run_ids: dict[str, dict[str, str]]


def build_synthetic_testset(
    store: CorpusStore,
    corpus: str,
    *,
    name: str,
    generator: Generator,
    judge: Judge,
    searcher: Searcher,
    root: Path,
    methods: Sequence[str] = ("bm25", "dense", "hybrid"),
    n_docs: int = 50,
    per_doc: int = 1,
    pool_depth: int = 10,
    seed: int = 0,
    filters: Filters | None = None,
    replace: bool = False,
    warehouse: Warehouse | None = None,
) -> SyntheticReport:
    """Build, judge and register (``kind="synthetic"``) a test set for ``corpus`` under ``root``.

    ``n_docs`` diverse documents (DUQGen sampling) get ``per_doc`` queries each; each kept query's pool (the
    top ``pool_depth`` of every method, plus the source document, always judged) is graded by ``judge``.
    Grade-0 pairs stay in the qrels (judged non-relevant); failed judgements are left out and counted;
    queries with no document judged relevant are dropped, as they cannot tell methods apart. Every
    judgement (raw answer, probability, error) goes to the ``judgements`` table of ``warehouse`` if given.

    Raises:
        ValueError: no query survived generation and filtering, or none has a relevant judged document.
    """
    doc_ids, vectors = document_vectors(store, corpus)
    sampled = sample_documents(doc_ids, vectors, n_docs, seed)
    search = searcher.search_batch  # for synthesize's round-trip filter
    synthesize(store, corpus, generator, per_doc=per_doc, doc_ids=sampled, filters=filters, search=search)
    # Matching the current content hash leaves out queries written from an older version of a document.
    current = store.documents.hashes(corpus)
    wanted = {(d, current[d], generator.name, generator.prompt_version) for d in sampled}
    rows = sorted(store.synthetic.rows(corpus), key=lambda r: r["query_id"])
    queries = [r for r in rows if r["kept"] and _key(r) in wanted]
    if not queries:
        raise ValueError(
            f"no synthetic query of {generator.name} ({generator.prompt_version}) survived the filters for "
            f"the {len(sampled)} sampled documents of {corpus!r}; see the reasons in the synthetic queries "
            "table, and loosen the filters or change the generator"
        )
    pools = _pools(searcher, queries, methods, pool_depth)
    texts = _texts(store, corpus, {d for pool in pools.values() for d in pool})
    by_id = {r["query_id"]: r for r in queries}
    pairs = [(q, by_id[q]["text"], d, texts[d]) for q, pool in pools.items() for d in pool]
    judgements = judge.judge(pairs)
    report = SyntheticReport(name, generator.name, judge.name, pooled_pairs=len(pairs))
    qrels: dict[str, dict[str, int]] = {}
    for j in judgements:
        if j.grade is None:
            report.failed += 1
        else:
            qrels.setdefault(j.query_id, {})[j.doc_id] = j.grade
    qrels = {q: grades for q, grades in qrels.items() if any(g > 0 for g in grades.values())}
    if not qrels:
        raise ValueError(
            f"{judge.name} judged no pooled document relevant for any of {len(queries)} queries; "
            "check the judge's answers in the judgements table"
        )
    with tempfile.TemporaryDirectory(prefix=f"zsr-synthetic-{corpus}-{name}-") as folder:
        _write_beir(Path(folder), [by_id[q] for q in sorted(qrels)], qrels)
        register(root, store, corpus, name, Path(folder), fmt="beir", replace=replace, kind="synthetic")
    if warehouse is not None:  # after register: no judgements logged for a set that was refused
        common = {"created_at": datetime.now(UTC), "corpus": corpus, "testset": name, "judge": judge.name}
        warehouse.append("judgements", _judgement_rows(common, by_id, judgements))
    report.queries, report.dropped_queries = len(qrels), len(queries) - len(qrels)
    report.judged = len(judgements) - report.failed
    report.relevant_pairs = sum(g > 0 for grades in qrels.values() for g in grades.values())
    report.mean_relevant_per_query = report.relevant_pairs / len(qrels)
    log.info("synthetic test set %s/%s: %s", corpus, name, report)
    return report


def agreement(
    warehouse: Warehouse,
    searcher: Searcher,
    human: TestSet,
    synthetic: TestSet,
    methods: Sequence[str],
    *,
    measure: str = "nDCG@10",
) -> AgreementResult:
    """Evaluate ``methods`` on both test sets and compare the two rankings of methods by ``measure``.

    Kendall tau-b (ties allowed; NaN when one side scores every method alike) and top-1 agreement (the
    same best method; ties go to the method listed first). Both sets' runs share one ``eval_id``; the
    result is also appended to the warehouse's ``agreements`` table.
    """
    if len(methods) < 2:
        raise ValueError(f"a ranking needs at least two methods, got {list(methods)}")
    strangers = [t.name for t in (human, synthetic) if t.corpus != searcher.corpus]
    if strangers:
        raise ValueError(f"test sets {strangers} do not belong to corpus {searcher.corpus!r}")
    canonical = str(parse_measures([measure])[0])
    eval_id = new_id("agreement")
    scores: dict[str, dict[str, float]] = {}
    run_ids: dict[str, dict[str, str]] = {}
    for side, testset in (("human", human), ("synthetic", synthetic)):
        runs = evaluate_methods(searcher, testset, methods, warehouse, measures=[canonical], eval_id=eval_id)
        scores[side] = {r.method: r.metrics[canonical] for r in runs}
        run_ids[side] = {r.method: r.run_id for r in runs}
    names = list(scores["human"])
    h, s = ([scores[side][m] for m in names] for side in ("human", "synthetic"))
    tau, p_value = kendalltau(h, s)  # variant "b" is scipy's default
    result = AgreementResult(
        searcher.corpus,
        human.name,
        synthetic.name,
        canonical,
        names,
        scores["human"],
        scores["synthetic"],
        float(tau),
        float(p_value),
        names[int(np.argmax(h))] == names[int(np.argmax(s))],  # argmax: the first of tied maxima
        run_ids,
    )
    row = {
        **{k: json.dumps(v) if isinstance(v, list | dict) else v for k, v in vars(result).items()},
        "created_at": datetime.now(UTC),
    }
    warehouse.append("agreements", pa.Table.from_pylist([row], SCHEMAS["agreements"]))
    return result


def _pools(searcher: Searcher, queries: list[dict], methods: Sequence[str], k: int) -> dict[str, list[str]]:
    """Per query: its source document, then every method's top ``k`` (first occurrence kept)."""
    pools = {r["query_id"]: {r["doc_id"]: None} for r in queries}  # dicts as ordered sets
    texts = {r["query_id"]: r["text"] for r in queries}
    for method in methods:
        for qid, ranking in searcher.search_batch(texts, method, k).items():
            pools[qid].update(dict.fromkeys(d for d, _ in ranking))
    return {q: list(pool) for q, pool in pools.items()}


def _texts(store: CorpusStore, corpus: str, doc_ids: set[str]) -> dict[str, str]:
    rows = store.documents.fetch(corpus, sorted(doc_ids), ["doc_id", "title", "text"])
    return {r["doc_id"]: f"{r['title'] or ''}\n{r['text'] or ''}".strip() for r in rows}


def _write_beir(folder: Path, queries: list[dict], qrels: dict[str, dict[str, int]]) -> None:
    (folder / "qrels").mkdir(parents=True)
    with (folder / "queries.jsonl").open("w", encoding="utf-8") as out:
        for r in queries:
            record = {"_id": r["query_id"], "text": r["text"], "metadata": _metadata(r)}
            out.write(json.dumps(record) + "\n")
    lines = [f"{q}\t{d}\t{g}\n" for q in sorted(qrels) for d, g in sorted(qrels[q].items())]
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(lines), "utf-8")


def _judgement_rows(common: dict, queries: dict[str, dict], judgements: list[Judgement]) -> pa.Table:
    rows = [
        {**common, **asdict(j), **_metadata(queries[j.query_id]), "query_text": queries[j.query_id]["text"]}
        for j in judgements
    ]
    return pa.Table.from_pylist(rows, SCHEMAS["judgements"])


def _key(query: dict[str, Any]) -> tuple[str, str, str, str]:
    return query["doc_id"], query["doc_hash"], query["generator"], query["prompt_version"]


def _metadata(query: dict[str, Any]) -> dict[str, str]:
    """What a synthetic query's record says about it beyond its text."""
    return {k: query[k] for k in ("generator", "prompt_version")} | {"source_doc": query["doc_id"]}
