"""The ``testset`` commands: register, list and synthesize test sets, and check a synthetic one."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from flows.cli.common import JsonOpt, app, cell, emit_json, err, listing, out, show, user_errors, workspace
from flows.cli.synthesis import DEFAULTS, option
from tasks.ingest.formats import TestSetFormat
from tasks.synthetic.config import SynthesisConfig

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
    with user_errors():
        testset, report = workspace().testsets.register(
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
    columns = {c: c for c in ("corpus", "name", "kind")} | {"queries": "n_queries", "qrels": "n_qrels"}
    listing(
        workspace().testsets.listing(corpus),
        columns | {"created": "created_at"},
        as_json,
        "no test sets yet: run `zsr testset add CORPUS NAME PATH`",
    )


@testset_app.command("synthesize")
def testset_synthesize(
    corpus: Annotated[str, typer.Argument(help="The corpus to build a test set for.")],
    name: Annotated[str, typer.Argument(help="Name to register the synthetic test set under.")],
    docs: Annotated[int, typer.Option(help="Diverse documents to write queries from.")] = 50,
    per_doc: Annotated[int, option("per_doc")] = DEFAULTS.per_doc,
    methods: Annotated[
        str, typer.Option(help="Methods whose top results are pooled and judged.")
    ] = "bm25,dense,hybrid",
    pool_depth: Annotated[int, typer.Option(min=1, help="Top results of each method pooled per query.")] = 10,
    generator: Annotated[str, option("generator")] = DEFAULTS.generator,
    judge: Annotated[str, typer.Option(help="llm (graded 0-2, single token).")] = "llm",
    roundtrip_k: Annotated[int, option("roundtrip_k")] = DEFAULTS.roundtrip_k,
    seed: Annotated[int, option("seed")] = DEFAULTS.seed,
    replace: Annotated[bool, typer.Option(help="Replace a test set registered under the same name.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Build a test set without human labels: sampled documents, generated queries, pooled and LLM-judged."""
    from tasks.methods.registry import split_methods

    with user_errors():
        if judge != "llm":
            raise ValueError(
                f"unknown judge {judge!r}; the CLI offers llm (oracle judges are for simulations)"
            )
        config = SynthesisConfig.of(
            generator=generator, per_doc=per_doc, sample_docs=docs, seed=seed, roundtrip_k=roundtrip_k
        )
        report = workspace().synthesize_testset(
            corpus, name, config, methods=split_methods(methods), pool_depth=pool_depth, replace=replace
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
    from tasks.methods.registry import split_methods

    with user_errors():
        result = workspace().agreement(corpus, human, synthetic, split_methods(methods), measure)
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


@testset_app.command("limit")
def testset_limit(
    folder: Annotated[
        Path, typer.Argument(metavar="OUT", help="New or empty folder to write the BEIR set into.")
    ],
    docs: Annotated[int, typer.Option(help="Documents: the core the queries need, then distractors.")],
    queries: Annotated[int, typer.Option(help='Queries "Who likes X?", two relevant documents each.')],
    attributes: Annotated[
        Path | None, typer.Option(help="Attribute pool, one per line (default: zsr's own 630).")
    ] = None,
    # Not SynthesisConfig's per_doc and seed (tests/unit/test_one_door.py), hence other names in Python.
    attributes_per_doc: Annotated[
        int | None,
        typer.Option("--per-doc", min=1, help="Attributes each document likes (default 45, as in LIMIT)."),
    ] = None,
    rng_seed: Annotated[int, typer.Option("--seed", help="The same seed writes the same set.")] = 42,
    replace: Annotated[bool, typer.Option(help="Replace the BEIR set already in OUT.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Write a LIMIT-style stress set (Weller et al., 2025): people who like things, "Who likes X?"."""
    from tasks.synthetic.limit import write_limit

    with user_errors():
        report = write_limit(folder, docs, queries, attributes, attributes_per_doc, rng_seed, replace)
    if as_json:
        emit_json(asdict(report))
        return
    out.print(
        f"wrote [bold]{report.out}[/]: {report.docs} documents ({report.core} core, {report.distractors} "
        f"distractors), {report.queries} queries, {report.qrels} qrels; {report.per_doc} attributes per "
        f"document from {report.pool} ({report.attributes}); core documents in {report.min_pairs}-"
        f"{report.max_pairs} pairs; seed {report.seed}",
        highlight=False,
        soft_wrap=True,
    )
    out.print("use it (NAME: a corpus name of your choice):", highlight=False, soft_wrap=True)
    out.print(f"  zsr ingest {report.out} --corpus NAME", highlight=False, markup=False, soft_wrap=True)
    out.print(f"  zsr testset add NAME limit {report.out}", highlight=False, markup=False, soft_wrap=True)
