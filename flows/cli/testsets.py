"""The ``testset`` commands: register, list and synthesize test sets, and check a synthetic one."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from flows.cli.common import (
    JsonOpt,
    app,
    cell,
    emit_json,
    err,
    listing,
    open_warehouse,
    out,
    show,
    user_errors,
)
from tasks.ingest.formats import TestSetFormat
from tasks.settings import get_settings

testset_app = typer.Typer(help="Register and list test sets (queries + relevance judgements) per corpus.")
app.add_typer(testset_app, name="testset")


@testset_app.command("add")
def testset_add(
    corpus: Annotated[str, typer.Argument(help="The corpus the judgements refer to.")],
    name: Annotated[str, typer.Argument(help="Name to register the test set under.")],
    path: Annotated[
        Path, typer.Argument(help="BEIR folder (queries.jsonl + qrels/SPLIT.tsv) or a TREC qrels file.")
    ],
    fmt: Annotated[
        TestSetFormat | None, typer.Option("--format", help="beir or trec (default: detected).")
    ] = None,
    split: Annotated[str, typer.Option(help="BEIR qrels split.")] = "test",
    queries: Annotated[
        Path | None, typer.Option(help="Queries (.jsonl or .tsv) for a TREC qrels file.")
    ] = None,
    replace: Annotated[bool, typer.Option(help="Replace a test set registered under the same name.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Validate a test set against the corpus and register it."""
    from tasks.evaluation.testsets import register
    from tasks.workspace import open_store

    with user_errors():
        testset, report = register(
            get_settings().testsets_dir,
            open_store(),
            corpus,
            name,
            path,
            fmt=fmt,
            split=split,
            queries=queries,
            replace=replace,
        )
    if as_json:
        emit_json({"corpus": corpus, "name": name, "content_hash": testset.content_hash, **asdict(report)})
        return
    out.print(
        f"registered [bold]{corpus}/{name}[/]: {report.n_judged_queries} judged queries, "
        f"{report.n_qrels} qrels"
    )
    for warning in report.warnings:
        err.print(f"[yellow]warning[/] {warning}", highlight=False)


@testset_app.command("list")
def testset_list(
    corpus: Annotated[str | None, typer.Option("--corpus", "-c", help="Only this corpus.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List registered test sets."""
    from tasks.evaluation.testsets import list_testsets

    columns = {c: c for c in ("corpus", "name", "kind")} | {"queries": "n_queries", "qrels": "n_qrels"}
    listing(
        list_testsets(get_settings().testsets_dir, corpus),
        columns | {"created": "created_at"},
        as_json,
        "no test sets yet: run `zsr testset add CORPUS NAME PATH`",
    )


@testset_app.command("synthesize")
def testset_synthesize(
    corpus: Annotated[str, typer.Argument(help="The corpus to build a test set for.")],
    name: Annotated[str, typer.Argument(help="Name to register the synthetic test set under.")],
    docs: Annotated[int, typer.Option(min=1, help="Diverse documents to write queries from.")] = 50,
    per_doc: Annotated[int, typer.Option(min=1, help="Queries per document.")] = 1,
    methods: Annotated[
        str, typer.Option(help="Methods whose top results are pooled and judged.")
    ] = "bm25,dense,hybrid",
    pool_depth: Annotated[int, typer.Option(min=1, help="Top results of each method pooled per query.")] = 10,
    generator: Annotated[str, typer.Option(help="llm, or extractive (no LLM).")] = "llm",
    judge: Annotated[str, typer.Option(help="llm (graded 0-2, single token).")] = "llm",
    roundtrip_k: Annotated[int, typer.Option(min=0, help="Round-trip filter depth (0: off).")] = 20,
    seed: Annotated[int, typer.Option(help="Seed of the document sample.")] = 0,
    replace: Annotated[bool, typer.Option(help="Replace a test set registered under the same name.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Build a test set without human labels: sampled documents, generated queries, pooled and LLM-judged."""
    from tasks.llm.judge import LLMJudge
    from tasks.methods.registry import split_methods
    from tasks.synthetic.generate import ExtractiveGenerator, Filters, LLMGenerator
    from tasks.synthetic.testset import build_synthetic_testset
    from tasks.workspace import llm_client, open_store, searcher

    settings = get_settings()
    with user_errors():
        if judge != "llm":
            raise ValueError(
                f"unknown judge {judge!r}; the CLI offers llm (oracle judges are for simulations)"
            )
        if generator not in ("llm", "extractive"):
            raise ValueError(f"unknown generator {generator!r}; use llm or extractive")
        llm = llm_client()
        report = build_synthetic_testset(
            open_store(),
            corpus,
            name=name,
            generator=ExtractiveGenerator() if generator == "extractive" else LLMGenerator(llm),
            judge=LLMJudge(llm),
            searcher=searcher(corpus),
            root=settings.testsets_dir,
            methods=split_methods(methods),
            n_docs=docs,
            per_doc=per_doc,
            pool_depth=pool_depth,
            seed=seed,
            filters=Filters(roundtrip_k=roundtrip_k or None),
            replace=replace,
            warehouse=open_warehouse(),
        )
    if as_json:
        emit_json(asdict(report))
        return
    out.print(
        f"registered [bold]{corpus}/{name}[/] (synthetic): {report.queries} queries, "
        f"{report.judged} pairs judged ({report.failed} failed), {report.relevant_pairs} relevant, "
        f"{report.mean_relevant_per_query:.1f} relevant per query; "
        f"generator {report.generator}, judge {report.judge}"
    )


@testset_app.command("agreement")
def testset_agreement(
    corpus: Annotated[str, typer.Argument(help="The corpus.")],
    human: Annotated[str, typer.Argument(help="Test set with human qrels.")],
    synthetic: Annotated[str, typer.Argument(help="Synthetic test set to check against it.")],
    methods: Annotated[
        str, typer.Option(help="Methods to rank (at least two).")
    ] = "bm25,dense,hybrid,multiview,d2q",
    measure: Annotated[str, typer.Option(help="Measure the methods are ranked by.")] = "nDCG@10",
    as_json: JsonOpt = False,
) -> None:
    """How well a synthetic test set ranks methods like the human one (Kendall tau, kept in the warehouse)."""
    from tasks.evaluation.testsets import load
    from tasks.methods.registry import split_methods
    from tasks.synthetic.testset import agreement
    from tasks.workspace import searcher

    root = get_settings().testsets_dir
    with user_errors():
        result = agreement(
            open_warehouse(),
            searcher(corpus),
            load(root, corpus, human),
            load(root, corpus, synthetic),
            split_methods(methods),
            measure=measure,
        )
    if as_json:
        emit_json(asdict(result))
        return
    show(
        ["method", f"{measure} ({human})", f"{measure} ({synthetic})"],
        [[m, result.human_scores[m], result.synthetic_scores[m]] for m in result.methods],
    )
    out.print(
        f"Kendall tau {cell(result.kendall_tau)} (p = {cell(result.p_value)}); "
        f"same best method: {'yes' if result.top1_agree else 'no'}"
    )
