"""Judge pipelines with a noisy judge: votes, interpolation, rerank over rede-rf, judge calls per query.

Usage: python bench/judges.py [--data DIR] [--datasets cranfield,cisi] [--tune cranfield] [--queries N]
           [--home DIR] [--alphas A,B]

Ingests each collection (into --home, or a temporary ZSR_HOME) and evaluates through the same path as
`zsr eval` with simulated judges: the oracle (human qrels) and noisy oracles at 90/80/70% accuracy, each
with independent noise and with correlated noise (half of each pair's errors shared by all its votes).
First, on the --tune collection only, at 90% correlated, it picks alpha (the weight of the judge against
the first stage in rerank) for single-vote and for voted reranks; then it reports, per collection, nDCG@10,
R@100 and judge calls per query (the warehouse's `queries.judge_calls`) of: hybrid, rerank, rede-rf,
rerank over rede-rf (judgements shared), interpolated rerank, votes of 3 and 5, and votes of 3 under a
budget of 40 calls. `--alphas A,B` gives the alphas (one vote, votes) instead of tuning, to run the other
collection in a second process with those chosen on the first. The last lines check the targets of
issue 18: at 90% correlated, the best pipeline within 40 calls a query against Cranfield 0.63 / CISI 0.665
nDCG@10, and nothing below hybrid at 70%. Prove the plumbing with `--datasets cisi --queries 5`.

The runs go through `evaluate_methods` (the evaluation sequence of `zsr eval`, over a searcher in hand) on
a searcher that computes each deterministic first stage's ranking and each query vector once per
collection and hands them to every later run (:class:`Reuse`): they are the same in every run, and
recomputing them for ~130 runs took hours on 2 shared cores. Latency is not measured here.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from bench.query_methods import MEASURES, rows, subset
from tasks.evaluation.runs import RunResult, evaluate_methods
from tasks.evaluation.testsets import TestSet
from tasks.llm.judge import Judge, NoisyOracleJudge, OracleJudge
from tasks.methods.base import Ranking
from tasks.methods.registry import Method, calls_llm, parse_method
from tasks.methods.search import Searcher
from tasks.settings import Settings
from tasks.workspace import Workspace

ACCURACIES = (0.9, 0.8, 0.7)
CORRELATED = 0.5  # the share of each pair's errors that all its votes share
ALPHAS = (1.0, 0.7, 0.5, 0.3)
TARGETS = {"cranfield": 0.63, "cisi": 0.665}  # nDCG@10 at 90% correlated within the call budget
BUDGET = 40


def pipelines(alpha: float, alpha_votes: float) -> list[str]:
    """The methods of the study, the interpolated ones at the tuned alphas, each once (alpha=1 is rerank)."""
    methods = [
        "rerank",
        "rede-rf",
        "rerank(first=rede-rf)",
        f"rerank(alpha={alpha})",
        f"rerank(votes=3, alpha={alpha_votes})",
        f"rerank(votes=5, alpha={alpha_votes})",
        f"rerank(votes=3, alpha={alpha_votes}, budget={BUDGET})",
        f"rerank(first=rede-rf(votes=3), votes=3, alpha={alpha_votes}, budget={BUDGET})",
    ]
    return list(dict.fromkeys(str(parse_method(m)) for m in methods))


class Reuse:
    """First-stage rankings (of methods that call no LLM) and query vectors, kept across the study's runs."""

    def __init__(self) -> None:
        self.rankings: dict[tuple[str, int, str], Ranking] = {}
        self.vectors: dict[str, np.ndarray] = {}

    def searcher(self, ws: Workspace, corpus: str, judge: Judge | None) -> Searcher:
        """``ws.searcher(corpus, judge)`` that asks this store before it retrieves or encodes queries."""
        searcher = ws.searcher(corpus, judge)
        retrieve, encode = searcher.retrieve, searcher.encode

        def reused_retrieve(queries: Mapping[str, str], method: str | Method, k: int) -> dict[str, Ranking]:
            if calls_llm(method):  # a judged method runs; its first stage comes back through here
                return retrieve(queries, method, k)
            key = (str(method), k)
            missing = {q: text for q, text in queries.items() if (*key, text) not in self.rankings}
            for qid, ranking in (retrieve(missing, method, k) if missing else {}).items():
                self.rankings[(*key, missing[qid])] = ranking
            return {q: self.rankings[(*key, text)] for q, text in queries.items()}

        def reused_encode(texts: list[str], *, queries: bool) -> np.ndarray:
            if not queries:
                return encode(texts, queries=False)
            missing = [t for t in dict.fromkeys(texts) if t not in self.vectors]
            if missing:
                self.vectors.update(zip(missing, encode(missing, queries=True), strict=True))
            return np.vstack([self.vectors[t] for t in texts])

        searcher.retrieve = reused_retrieve  # type: ignore[method-assign]
        searcher.encode = reused_encode  # type: ignore[method-assign]
        return searcher


def judges(test: TestSet) -> list[tuple[str, Judge]]:
    """The oracle, then each accuracy with independent and with correlated noise."""
    out: list[tuple[str, Judge]] = [("oracle", OracleJudge(test.qrels))]
    for accuracy in ACCURACIES:
        out.append((f"{accuracy:.0%} independent", NoisyOracleJudge(test.qrels, accuracy)))
        out.append(
            (f"{accuracy:.0%} correlated", NoisyOracleJudge(test.qrels, accuracy, correlated=CORRELATED))
        )
    return out


def judge_calls(ws: Workspace, run: RunResult) -> float:
    """Judge calls per query of a run, from the warehouse."""
    (row,) = rows(ws, "SELECT avg(judge_calls) AS calls FROM queries WHERE run_id = ?", [run.run_id])
    return float(row["calls"] or 0.0)


def show(ws: Workspace, label: str, run: RunResult) -> float:
    """Print one row; returns its judge calls per query."""
    calls = judge_calls(ws, run)
    print(
        f"{label:16} {run.method:62} {run.metrics['nDCG@10']:7.3f} {run.metrics['R@100']:6.3f} {calls:6.1f}"
    )
    return calls


def evaluate(
    ws: Workspace, reuse: Reuse, test: TestSet, methods: list[str], judge: Judge | None
) -> list[RunResult]:
    """Runs of ``methods`` on ``test`` through the evaluation sequence, published to the warehouse."""
    return evaluate_methods(
        reuse.searcher(ws, test.corpus, judge), test, methods, ws.warehouse, measures=MEASURES
    )


def tune(ws: Workspace, reuse: Reuse, test: TestSet) -> tuple[float, float]:
    """The alphas with the best nDCG@10 at 90% correlated, for one vote and for votes of 3 (in budget)."""
    judge = NoisyOracleJudge(test.qrels, 0.9, correlated=CORRELATED)
    best = []
    for template in ("rerank(alpha={})", f"rerank(votes=3, alpha={{}}, budget={BUDGET})"):
        runs = evaluate(ws, reuse, test, [template.format(a) for a in ALPHAS], judge)
        for run in runs:
            show(ws, "tune 90% corr", run)
        scores = [run.metrics["nDCG@10"] for run in runs]
        best.append(ALPHAS[scores.index(max(scores))])  # ties: the larger alpha, listed first
    return best[0], best[1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parent / "data")
    parser.add_argument("--datasets", default="cranfield,cisi")
    parser.add_argument("--tune", default="cranfield", help="collection the alphas are chosen on")
    parser.add_argument("--queries", type=int, default=None, help="first N judged queries (all)")
    parser.add_argument("--home", type=Path, default=None, help="ZSR_HOME to reuse (a temporary one)")
    parser.add_argument("--alphas", default=None, help="alpha for one vote and for votes: no tuning")
    args = parser.parse_args()

    order = sorted(args.datasets.split(","), key=lambda d: d != args.tune)  # the tuning collection first
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace.open(Settings(home=args.home or Path(tmp)))
        alphas = (1.0, 1.0)
        if args.alphas:
            one, voted = (float(a) for a in args.alphas.split(","))
            alphas, args.tune = (one, voted), None
        verdicts = []
        for dataset in order:
            folder = args.data / dataset
            ws.ingest(folder, dataset, fmt="beir", skip_bad=True)
            human, _ = ws.testsets.register(dataset, "human", folder, replace=True)  # a reused --home
            test = subset(human, args.queries)
            reuse = Reuse()
            print(f"\n{dataset}: {len(test.queries)} queries")
            print(f"{'judge':16} {'method':62} {'nDCG@10':>7} {'R@100':>6} {'calls':>6}")
            if dataset == args.tune:
                alphas = tune(ws, reuse, test)
                print(f"chosen on {dataset}: alpha={alphas[0]} (one vote), {alphas[1]} (votes)")
            (hybrid,) = evaluate(ws, reuse, test, ["hybrid"], None)
            show(ws, "-", hybrid)
            floor = hybrid.metrics["nDCG@10"]
            for label, judge in judges(test):
                # Votes of a perfect judge agree, so the oracle runs the pipelines without them.
                methods = [m for m in pipelines(*alphas) if label != "oracle" or "votes" not in m]
                for run in evaluate(ws, reuse, test, methods, judge):
                    calls = show(ws, label, run)
                    score = run.metrics["nDCG@10"]
                    if label == "90% correlated" and calls <= BUDGET:
                        verdicts.append((dataset, "best", score, run.method, calls))
                    if label.startswith("70%") and score < floor:
                        verdicts.append((dataset, "below hybrid", score, f"{run.method} ({label})", calls))
        for dataset in order:
            best = max((v for v in verdicts if v[0] == dataset and v[1] == "best"), key=lambda v: v[2])
            target = TARGETS.get(dataset)
            met = "" if target is None else f" (target {target}: {'met' if best[2] >= target else 'missed'})"
            print(f"{dataset}: best within {BUDGET} calls at 90% correlated: {best[3]} {best[2]:.3f}{met}")
            below = [v for v in verdicts if v[0] == dataset and v[1] == "below hybrid"]
            print(
                f"{dataset}: at 70% below hybrid: {', '.join(f'{v[3]} {v[2]:.3f}' for v in below) or 'none'}"
            )


if __name__ == "__main__":
    main()
