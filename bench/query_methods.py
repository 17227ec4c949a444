"""Query-time methods on Cranfield and CISI: nDCG@10 and R@100 beside per-query latency and LLM tokens.

Usage: python bench/query_methods.py [--data DIR] [--datasets cranfield,cisi] [--queries N]
           [--llm-queries N] [--hyde-queries N] [--hyde SPEC] [--rede SPEC] [--rerank SPEC] [--no-llm]

Ingests each collection into a temporary ZSR_HOME (bad records skipped) and evaluates through the same path
as `zsr eval`, then prints, per collection:
  (b) no LLM: bm25, rm3, dense, hybrid and prf; rede-rf and rerank with the oracle judge (human qrels)
      and with noisy oracles at 90/80/70% accuracy (over --queries queries, default all);
  (a) the configured LLM (ZSR_LLM_MODEL; default the bundled zsr-local/smollm2): rede-rf and rerank with
      ReDE-RF's one-token LLM judge over --llm-queries queries (default all), hyde over the first
      --hyde-queries of them (default 20: eight passages of up to 512 tokens a query take 35-40 s on
      two cores), and ReDE-RF against HyDE in generated tokens and wall time on those same queries.
The `HyDE Qs` column is each run's nDCG@10 over HyDE's queries, for a like-for-like comparison.
Rerank judges the same top 20 as rede-rf with the same judge, so its judgements come from the LLM cache
(the `cached` column); its uncached cost is rede-rf's. Prove the plumbing with, for instance,
`--datasets cranfield --queries 5 --llm-queries 2 --hyde-queries 1 --hyde "hyde(n=2, max_tokens=32)"`.
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from tasks.evaluation.runs import RunResult
from tasks.evaluation.testsets import TestSet
from tasks.llm.client import Request
from tasks.llm.judge import Judge, NoisyOracleJudge, OracleJudge
from tasks.settings import Settings
from tasks.workspace import Workspace

MEASURES = ["nDCG@10", "R@100"]
ACCURACIES = (0.9, 0.8, 0.7)


def subset(testset: TestSet, n: int | None) -> TestSet:
    """The first ``n`` judged queries (all when ``n`` is None), so a run can be sized to the machine."""
    ids = list(testset.queries)[:n]
    return replace(
        testset, queries={q: testset.queries[q] for q in ids}, qrels={q: testset.qrels[q] for q in ids}
    )


def evaluate(ws: Workspace, test: TestSet, methods: list[str], judge: Judge | None = None) -> list[RunResult]:
    """Runs of ``methods`` on ``test`` (a subset of a registered set), through the same path as `zsr eval`."""
    return ws.evaluate(test.corpus, test, methods, MEASURES, judge=judge).runs


def rows(ws: Workspace, sql: str, params: list[Any]) -> list[dict[str, Any]]:
    """The rows of one query over the warehouse."""
    frame = ws.sql(sql, params)
    assert frame is not None  # a SELECT always has a result
    return frame.to_dicts()


def cost(ws: Workspace, run: RunResult, query_ids: list[str] | None = None) -> dict:
    """Per-query means and sums of a run's recorded cost, over ``query_ids`` (all when ``None``)."""
    (row,) = rows(
        ws,
        """SELECT avg(latency_ms) AS ms, sum(latency_ms) / 1000 AS seconds, avg(tokens_in) AS tokens_in,
                  avg(tokens_out) AS tokens_out, sum(tokens_out) AS generated, sum(cache_hits) AS cache_hits,
                  count(fallback) AS fallbacks
           FROM queries WHERE run_id = ? AND (? IS NULL OR list_contains(?, query_id))""",
        [run.run_id, query_ids, query_ids],
    )
    return row


def show(ws: Workspace, label: str, runs: list[RunResult], few: list[str]) -> None:
    """One row a run; ``few``: HyDE's queries, over which each run's nDCG@10 is shown too."""
    for run in runs:
        c = cost(ws, run)
        (on_few,) = rows(
            ws,
            """SELECT avg(value) AS v FROM query_metrics
               WHERE run_id = ? AND measure = 'nDCG@10' AND list_contains(?, query_id)""",
            [run.run_id, few],
        )
        print(
            f"{label:24} {run.method:34} {run.metrics['nDCG@10']:7.3f} {run.metrics['R@100']:6.3f} "
            f"{on_few['v'] or 0:9.3f} {c['ms']:9.1f} {c['tokens_in'] or 0:9.0f} {c['tokens_out'] or 0:9.0f} "
            f"{int(c['cache_hits'] or 0):6d} "
            f"{int(c['fallbacks'] or 0):5d}/{run.n_queries}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parent / "data")
    parser.add_argument("--datasets", default="cranfield,cisi")
    parser.add_argument("--queries", type=int, default=None, help="queries for the no-LLM methods (all)")
    parser.add_argument("--llm-queries", type=int, default=None, help="queries for rede-rf and rerank (all)")
    parser.add_argument("--hyde-queries", type=int, default=20, help="queries for hyde")
    parser.add_argument("--hyde", default="hyde", help="HyDE method string (default: the paper's n=8, 512)")
    parser.add_argument("--rede", default="rede-rf", help="ReDE-RF method string")
    parser.add_argument("--rerank", default="rerank", help="rerank method string")
    parser.add_argument("--no-llm", action="store_true", help="skip part (a)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as home:
        ws = Workspace.open(Settings(home=Path(home)))
        for dataset in args.datasets.split(","):
            folder = args.data / dataset
            ws.ingest(folder, dataset, fmt="beir", skip_bad=True)
            human, _ = ws.testsets.register(dataset, "human", folder)
            testset = subset(human, args.queries)
            few = list(subset(human, args.hyde_queries).queries)  # HyDE's queries, the first of the set
            print(f"\n{dataset}: {len(testset.queries)} queries")
            print(
                f"{'judge / LLM':24} {'method':34} {'nDCG@10':>7} {'R@100':>6} {'HyDE Qs':>9} "
                f"{'ms/query':>9} {'tokens in':>9} {'out':>9} {'cached':>6} {'fallbacks':>9}"
            )

            show(ws, "-", evaluate(ws, testset, ["bm25", "rm3", "dense", "hybrid", "prf"]), few)
            judges: list[tuple[str, Judge]] = [("oracle", OracleJudge(human.qrels))]
            judges += [(f"noisy oracle {a:.0%}", NoisyOracleJudge(human.qrels, a)) for a in ACCURACIES]
            for label, judge in judges:
                show(ws, label, evaluate(ws, testset, [args.rede, args.rerank], judge), few)
            if args.no_llm:
                continue

            # ReDE-RF's one-token LLM judge (no judge given) over the metered LLM. Load the model outside the
            # timed queries: the first generation would otherwise carry it.
            ws.llm.complete_many([Request([{"role": "user", "content": "Hello"}], max_tokens=1)], "warm-up")
            model = ws.llm.config.model
            runs = evaluate(ws, subset(human, args.llm_queries), ["dense", "hybrid", args.rede, args.rerank])
            show(ws, model, runs, few)
            (hyde,) = evaluate(ws, subset(human, args.hyde_queries), [args.hyde])
            show(ws, model, [hyde], few)
            rede, spent = cost(ws, runs[2], few), cost(ws, hyde, few)
            print(
                f"ReDE-RF against HyDE with {model} on the same {len(few)} queries: "
                f"generated tokens {rede['generated']} vs {spent['generated']}, "
                f"wall time {rede['seconds']:.1f} s vs {spent['seconds']:.1f} s "
                f"(HyDE/ReDE-RF: {spent['seconds'] / rede['seconds']:.1f}x)"
            )


if __name__ == "__main__":
    main()
