"""Reading runs back from the warehouse: listings, paired comparisons, TREC export, report inputs."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import polars as pl
from scipy import stats

from storage.ids import trec_id
from storage.warehouse import Warehouse


class UnknownRunError(LookupError):
    """No published run has this id."""


def resolve_run_id(warehouse: Warehouse, run_id: str) -> str:
    """The full id of ``run_id``: itself, or the one run ending with it (narrow tables show the suffix).

    An unknown or ambiguous suffix is an error naming the matches and ``zsr runs --json`` for the full ids.
    """
    matches = [
        row["run_id"]
        for row in warehouse.query(
            "SELECT run_id FROM runs WHERE run_id = $1 OR (length($1) >= 6 AND ends_with(run_id, $1))"
            " ORDER BY run_id = $1 DESC, run_id",
            [run_id],
        ).to_pylist()
    ]
    if matches and matches[0] == run_id:
        return run_id
    if len(matches) > 1:
        raise UnknownRunError(
            f"run id {run_id!r} is ambiguous ({', '.join(matches)}); give the full id (`zsr runs --json`)"
        )
    return matches[0] if matches else run_id


def run_row(warehouse: Warehouse, run_id: str) -> dict[str, Any]:
    """The ``runs`` row of ``run_id``, or an error suggesting ``zsr runs``."""
    rows = warehouse.query("SELECT * FROM runs WHERE run_id = ?", [run_id]).to_pylist()
    if not rows:
        raise UnknownRunError(f"no run {run_id!r} in {warehouse.root}; list them with `zsr runs`")
    return rows[0]


def list_runs(warehouse: Warehouse, corpus: str | None = None, limit: int = 20) -> pl.DataFrame:
    """Newest runs first, with nDCG@10 and R@100 where measured, and mean latency."""
    sql = """
        SELECT r.run_id, r.created_at, r.corpus, r.testset, r.method, r.n_queries,
               max(m.value) FILTER (WHERE m.measure = 'nDCG@10') AS "nDCG@10",
               max(m.value) FILTER (WHERE m.measure = 'R@100') AS "R@100",
               (SELECT avg(latency_ms) FROM queries q WHERE q.run_id = r.run_id) AS mean_latency_ms
        FROM runs r LEFT JOIN metrics m USING (run_id)
        WHERE ? IS NULL OR r.corpus = ?
        GROUP BY ALL ORDER BY r.created_at DESC, r.run_id DESC LIMIT ?"""
    return pl.from_arrow(warehouse.query(sql, [corpus, corpus, limit]))  # type: ignore[return-value]


@dataclass
class Comparison:
    """Run B against run A on one measure, query by query (positive delta: B is better)."""

    run_a: dict[str, Any]
    run_b: dict[str, Any]
    measure: str
    mean_a: float
    mean_b: float
    wins: int
    ties: int
    losses: int
    t_test_p: float | None
    wilcoxon_p: float | None
    cost: dict[str, tuple[float | None, float | None]]
    aggregates: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    gains: list[dict[str, Any]] = field(default_factory=list)
    drops: list[dict[str, Any]] = field(default_factory=list)


def compare_runs(
    warehouse: Warehouse,
    run_a: str,
    run_b: str,
    measure: str = "nDCG@10",
    top: int = 5,
    queries: dict[str, str] | None = None,
) -> Comparison:
    """Paired comparison of two runs over the queries both scored on ``measure``.

    Significance: the paired t-test and the Wilcoxon signed-rank test from scipy (two-sided); ``None`` when
    the test is undefined (fewer than two queries, or every difference zero).
    """
    a, b = run_row(warehouse, run_a), run_row(warehouse, run_b)
    deltas = pl.from_arrow(
        warehouse.query(
            "SELECT * FROM query_deltas(?, ?) WHERE measure = ? ORDER BY query_id", [run_a, run_b, measure]
        )
    )
    assert isinstance(deltas, pl.DataFrame)
    if deltas.is_empty():
        raise ValueError(
            f"runs {run_a} and {run_b} share no query scored on {measure!r}; "
            "compare runs of the same test set, on a measure both computed"
        )
    va, vb = deltas["value_a"].to_numpy(), deltas["value_b"].to_numpy()
    diff = vb - va
    t_p = w_p = None
    if len(diff) > 1 and (diff != 0).any():
        t_p = float(stats.ttest_rel(vb, va).pvalue)
        w_p = float(stats.wilcoxon(vb, va).pvalue)
    ordered = deltas.with_columns(text=pl.col("query_id").replace_strict(queries or {}, default=None))
    movers = ordered.sort(["delta", "query_id"])
    return Comparison(
        run_a=a,
        run_b=b,
        measure=measure,
        mean_a=float(va.mean()),
        mean_b=float(vb.mean()),
        wins=int((diff > 1e-9).sum()),
        ties=int((abs(diff) <= 1e-9).sum()),
        losses=int((diff < -1e-9).sum()),
        t_test_p=None if t_p is None or math.isnan(t_p) else t_p,
        wilcoxon_p=None if w_p is None or math.isnan(w_p) else w_p,
        cost=_cost(warehouse, run_a, run_b),
        aggregates=_aggregates(warehouse, run_a, run_b),
        gains=movers.filter(pl.col("delta") > 1e-9).reverse().head(top).to_dicts(),
        drops=movers.filter(pl.col("delta") < -1e-9).head(top).to_dicts(),
    )


def _aggregates(warehouse: Warehouse, run_a: str, run_b: str) -> dict[str, tuple[float | None, float | None]]:
    rows = warehouse.query(
        """SELECT measure, max(value) FILTER (WHERE run_id = $1) AS a,
                  max(value) FILTER (WHERE run_id = $2) AS b
           FROM metrics WHERE run_id IN ($1, $2) GROUP BY measure ORDER BY measure""",
        [run_a, run_b],
    ).to_pylist()
    return {r["measure"]: (r["a"], r["b"]) for r in rows}


_COST = """
    SELECT avg(latency_ms) AS "mean latency ms", avg(llm_calls) AS "LLM calls/query",
           avg(tokens_in) AS "LLM tokens in/query", avg(tokens_out) AS "LLM tokens out/query",
           sum(cache_hits) / nullif(sum(llm_calls), 0) AS "LLM cache hit rate",
           avg(CAST(fallback IS NOT NULL AS INT)) AS "fallback rate"
    FROM queries WHERE run_id = ?"""


def _cost(warehouse: Warehouse, run_a: str, run_b: str) -> dict[str, tuple[float | None, float | None]]:
    """Per-query cost of both runs: latency, LLM calls and tokens, cache hits, fallbacks."""
    (a,), (b,) = (warehouse.query(_COST, [run]).to_pylist() for run in (run_a, run_b))
    return {name: (a[name], b[name]) for name in a}


def trec_lines(warehouse: Warehouse, run_id: str) -> list[str]:
    """The run in TREC format: ``query Q0 doc rank score tag``, ranks from 1.

    Whitespace and ``%`` in query and document ids are percent-encoded (:func:`storage.ids.trec_id`), so every
    line keeps its six fields; zsr decodes them where it reads TREC files.
    """
    run_row(warehouse, run_id)
    rows = warehouse.query(
        "SELECT query_id, doc_id, rank, score FROM rankings WHERE run_id = ? ORDER BY query_id, rank",
        [run_id],
    ).to_pylist()
    return [
        f"{trec_id(r['query_id'])} Q0 {trec_id(r['doc_id'])} {r['rank']} {r['score']:.6f} {run_id}"
        for r in rows
    ]


def eval_frames(warehouse: Warehouse, run_id: str) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """``runs``, ``metrics`` and ``query_metrics`` of all runs in the evaluation ``run_id`` belongs to."""
    eval_id = run_row(warehouse, run_id)["eval_id"]
    frames = []
    for sql in (
        "SELECT * FROM runs WHERE eval_id = ? ORDER BY created_at, run_id",
        "SELECT m.* FROM metrics m JOIN runs r USING (run_id) WHERE r.eval_id = ?",
        "SELECT q.* FROM query_metrics q JOIN runs r USING (run_id) WHERE r.eval_id = ?",
    ):
        frame = pl.from_arrow(warehouse.query(sql, [eval_id]))
        assert isinstance(frame, pl.DataFrame)
        frames.append(frame)
    return frames[0], frames[1], frames[2]


Cost = Literal["calls", "tokens", "judge_calls"]
_FRONTIER = """
    SELECT r.run_id, r.method, max(m.value) AS quality,
           (SELECT avg(llm_calls) FROM queries q WHERE q.run_id = r.run_id) AS calls,
           (SELECT avg(tokens_in + tokens_out) FROM queries q WHERE q.run_id = r.run_id) AS tokens,
           (SELECT avg(judge_calls) FROM queries q WHERE q.run_id = r.run_id) AS judge_calls
    FROM runs r LEFT JOIN metrics m ON m.run_id = r.run_id AND m.measure = ?
    WHERE r.eval_id = ? GROUP BY r.run_id, r.method, r.created_at ORDER BY r.created_at, r.run_id"""


@dataclass(frozen=True)
class FrontierPoint:
    """One method of an evaluation: quality on a measure, LLM and judge cost per query, Pareto-optimality.

    ``on_frontier``: no other method of the evaluation is at least as good for at most its cost.
    """

    run_id: str
    method: str
    quality: float | None  # None: the measure was not computed for this run
    calls: float  # LLM calls per query
    tokens: float  # LLM tokens (in + out) per query
    on_frontier: bool
    # Judge calls per query: LLM calls of an LLM judge, and the only cost of a simulated (oracle) judge.
    judge_calls: float = 0.0


def pareto(points: list[tuple[float, float]]) -> list[bool]:
    """Which ``(cost, quality)`` points no other point dominates: cost as low, quality as high, one strictly.

    Equal points both stay: neither is better than the other.
    """
    return [
        not any(c <= cost and q >= quality and (c, q) != (cost, quality) for c, q in points)
        for cost, quality in points
    ]


def frontier(
    warehouse: Warehouse, run_id: str, measure: str = "nDCG@10", cost: Cost = "calls"
) -> list[FrontierPoint]:
    """The methods of ``run_id``'s evaluation by ``cost`` per query (cheapest first), the frontier marked.

    A run without ``measure`` is listed but never on the frontier; runs stored before their cost was
    recorded count as free.
    """
    eval_id = run_row(warehouse, run_id)["eval_id"]
    rows = warehouse.query(_FRONTIER, [measure, eval_id]).to_pylist()
    if all(r["quality"] is None for r in rows):
        raise ValueError(f"no run of evaluation {eval_id} has {measure!r}; pick a measure it computed")
    scored = [r for r in rows if r["quality"] is not None and not math.isnan(r["quality"])]
    marks = dict(
        zip(
            (r["run_id"] for r in scored),
            pareto([(r[cost] or 0.0, r["quality"]) for r in scored]),
            strict=True,
        )
    )
    points = [
        FrontierPoint(
            r["run_id"],
            r["method"],
            r["quality"] if r["run_id"] in marks else None,
            r["calls"] or 0.0,
            r["tokens"] or 0.0,
            marks.get(r["run_id"], False),
            r["judge_calls"] or 0.0,
        )
        for r in rows
    ]
    return sorted(points, key=lambda p: (getattr(p, cost), -(p.quality or 0.0), p.method))


def cheapest(points: list[FrontierPoint], target: float, cost: Cost = "calls") -> FrontierPoint | None:
    """The cheapest method whose quality reaches ``target`` (best quality among equally cheap ones)."""
    reaching = [p for p in points if p.quality is not None and p.quality >= target]
    return min(reaching, key=lambda p: (getattr(p, cost), -(p.quality or 0.0)), default=None)
