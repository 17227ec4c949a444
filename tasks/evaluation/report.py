"""A one-page HTML report of one evaluation: provenance, aggregate scores, two charts, the hardest queries.

Each file is written under a temporary name and then moved into place, so no reader sees half a report.
"""

from __future__ import annotations

import html
import math
import random
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Literal

import polars as pl

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from tasks.evaluation.compare import FrontierPoint

DASH = "–"
HARDEST = 10
_CSS = """body{font:15px/1.45 system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}th,td{padding:.3em .7em;border-bottom:1px solid #ddd}
th{text-align:left;background:#f4f4f4;max-width:16em;overflow-wrap:anywhere}img{max-width:100%}
td.n{text-align:right;font-variant-numeric:tabular-nums}figcaption,.note{color:#555;font-size:.9em}
.warning{background:#fff3cd;border-left:4px solid #e0a800;padding:.4em .7em}"""


def _fmt(value: float | None) -> str:
    return DASH if value is None or math.isnan(value) else f"{value:.3f}"


def _finite(values: list[float]) -> list[float]:
    return [v for v in values if v is not None and not math.isnan(v)]


def _labels(runs: pl.DataFrame) -> dict[str, str]:
    """``{run_id: label}`` in the order of ``runs``: the method, plus the run id when two runs share it."""
    if runs.is_empty():
        raise ValueError("no runs to report: `runs` is empty; check the eval_id asked of the warehouse")
    methods = runs["method"].to_list()
    return {
        run_id: method if methods.count(method) == 1 else f"{method} [{run_id}]"
        for run_id, method in zip(runs["run_id"].to_list(), methods, strict=True)
    }


def _wrap(label: str, width: int = 30) -> str:
    """Break after commas, parentheses, slashes and spaces: method strings have few spaces, many commas."""
    lines = [""]
    for token in re.split(r"(?<=[,(/ ])", label.replace("$", r"\$")):  # a pair of $ would start mathtext
        if lines[-1] and len(lines[-1]) + len(token) > width:
            lines.append("")
        lines[-1] += token
    return "\n".join(lines)


def _aggregates(runs: pl.DataFrame, metrics: pl.DataFrame) -> tuple[list[str], dict[tuple[str, str], float]]:
    """Measures in order of first appearance, and ``{(run_id, measure): value}`` for the reported runs."""
    metrics = metrics.filter(pl.col("run_id").is_in(runs["run_id"].implode()))
    values = {(r, m): v for r, m, v in metrics.select("run_id", "measure", "value").iter_rows()}
    return metrics["measure"].unique(maintain_order=True).to_list(), values


def _per_query(runs: pl.DataFrame, query_metrics: pl.DataFrame, measure: str) -> pl.DataFrame:
    """Per-query rows of ``measure`` for the reported runs, NaN as null; raises if there are none."""
    mine = query_metrics.filter(pl.col("run_id").is_in(runs["run_id"].implode()))
    rows = mine.filter(pl.col("measure") == measure)
    if rows.is_empty():
        raise ValueError(f"no per-query {measure!r} for these runs; present: {sorted(set(mine['measure']))}")
    return rows.with_columns(pl.col("value").fill_nan(None))


def _axes(width: float, height: float, grid: Literal["x", "y"]) -> tuple[Figure, Axes]:
    # A bare Figure on an Agg canvas rather than pyplot: no global state for concurrent tasks to trip over.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis=grid, alpha=0.3)
    ax.set_axisbelow(True)
    return figure, ax


def _write_atomic(path: Path, write: Callable[[IO[bytes]], object]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")  # same directory, so the rename is atomic
    try:
        with tmp.open("wb") as f:
            write(f)
        return tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def method_comparison_chart(runs: pl.DataFrame, metrics: pl.DataFrame, path: Path) -> Path:
    """Grouped bar chart (one group per measure, one bar per method, value on each bar) written as PNG."""
    labels = _labels(runs)
    measures, values = _aggregates(runs, metrics)
    n = len(labels)
    width = 0.8 / max(n, 2)  # a lone bar as wide as its whole group looks like a mistake
    upright = n > 3  # side by side, three-decimal labels overlap once the bars get narrow
    size = min(14.0, max(6.5, 1.5 + len(measures) * (0.4 + 0.42 * n))), 4.6 + 0.3 * math.ceil(n / 2)
    figure, ax = _axes(*size, grid="y")
    for i, (run_id, label) in enumerate(labels.items()):
        heights = [values.get((run_id, m), math.nan) for m in measures]
        xs = [j + (i - (n - 1) / 2) * width for j in range(len(measures))]
        colour = f"C{i % 10}"  # matplotlib's default cycle, so both charts give a method the same colour
        bars = ax.bar(
            xs, [0.0 if math.isnan(h) else h for h in heights], width, label=_wrap(label), color=colour
        )
        ax.bar_label(bars, [_fmt(h) for h in heights], padding=2, fontsize=8, rotation=90 if upright else 0)
    top = max(_finite(list(values.values())), default=0.0) or 1.0
    ax.set_ylim(0, top * (1.22 if upright else 1.1))
    ax.set_xticks(range(len(measures)), measures)
    ax.set_ylabel("mean over queries (higher is better)")
    figure.legend(loc="outside lower center", ncols=min(n, 2), frameon=False, fontsize=9)
    return _write_atomic(path, lambda f: figure.savefig(f, format="png"))


def per_query_distribution_chart(
    runs: pl.DataFrame, query_metrics: pl.DataFrame, measure: str, path: Path
) -> Path:
    """Per-query ``measure`` per method as PNG: box plot, each query a jittered dot, the mean a diamond."""
    labels = _labels(runs)
    rows = _per_query(runs, query_metrics, measure)
    data = [_finite(rows.filter(pl.col("run_id") == r)["value"].to_list()) for r in labels]
    positions = list(range(len(labels), 0, -1))  # methods down the y axis, so long names read horizontally
    figure, ax = _axes(9.0, 1.5 + 0.8 * len(labels), grid="x")
    boxes = ax.boxplot(
        data,
        positions=positions,
        orientation="horizontal",
        patch_artist=True,
        showfliers=False,  # every query is drawn as a dot already
        showmeans=True,
        meanprops={"marker": "D", "markerfacecolor": "white", "markeredgecolor": "black", "zorder": 4},
        medianprops={"color": "black"},
    )
    rng = random.Random(0)  # a fixed seed: the same data draws the same picture
    for i, (box, values, y) in enumerate(zip(boxes["boxes"], data, positions, strict=True)):
        box.set(facecolor=(f"C{i % 10}", 0.25), edgecolor=f"C{i % 10}")
        ax.scatter(values, [y + rng.uniform(-0.2, 0.2) for _ in values], s=12, color=f"C{i % 10}", alpha=0.6)
    ticks = [f"{_wrap(label)}\n(n={len(v)})" for label, v in zip(labels.values(), data, strict=True)]
    ax.set_yticks(positions, ticks)
    ax.set_xlabel(f"{measure} per query (higher is better)")
    ax.set_title(f"Per-query {measure}: box = quartiles, | = median, ◇ = mean, dots = queries", fontsize=10)
    return _write_atomic(path, lambda f: figure.savefig(f, format="png"))


def frontier_chart(runs: pl.DataFrame, points: list[FrontierPoint], measure: str, path: Path) -> Path:
    """``measure`` against LLM calls per query as PNG, one dot a method, the Pareto frontier joined.

    A method keeps its colour from the other charts; frontier methods are ringed and joined by a step line
    (from each frontier method, quality holds until the next one costs more and gives more).
    """
    labels = _labels(runs)
    colour = {run_id: f"C{i % 10}" for i, run_id in enumerate(labels)}
    figure, ax = _axes(9.0, 5.0, grid="y")
    ax.grid(axis="x", alpha=0.3)
    shown = {p.run_id: (p, p.quality) for p in points if p.quality is not None}
    best = sorted((p.calls, q) for p, q in shown.values() if p.on_frontier)
    if best:
        xs = [c for c, _ in best] + [max(p.calls for p, _ in shown.values())]
        ys = [q for _, q in best] + [best[-1][1]]
        ax.step(xs, ys, where="post", color="black", alpha=0.5, linewidth=1, label="Pareto frontier")
    for p, quality in shown.values():
        ax.scatter(
            [p.calls],
            [quality],
            s=90 if p.on_frontier else 45,
            color=colour[p.run_id],
            edgecolors="black" if p.on_frontier else "none",
            linewidths=1.5,
            zorder=3,
            label=_wrap(labels[p.run_id]) + (" (frontier)" if p.on_frontier else ""),
        )
    ax.set_xlabel("LLM calls per query (lower is cheaper)")
    ax.set_ylabel(f"{measure} (higher is better)")
    ax.set_title(f"{measure} against LLM calls per query: ringed = on the cost-quality frontier", fontsize=10)
    figure.legend(loc="outside lower center", ncols=2, frameon=False, fontsize=9)
    return _write_atomic(path, lambda f: figure.savefig(f, format="png"))


def _frontier_section(runs: pl.DataFrame, points: list[FrontierPoint], measure: str, out_dir: Path) -> str:
    """The frontier chart and its table: each method's quality and LLM cost, the frontier marked."""
    e = html.escape
    labels = _labels(runs)
    chart = frontier_chart(runs, points, measure, out_dir / "frontier.png")
    alt = f"Scatter plot of {measure} against LLM calls per query, the Pareto frontier joined"
    rows = [
        _td(labels[p.run_id])
        + _num(p.quality)
        + f"<td class=n>{p.calls:.1f}</td>"
        + f"<td class=n>{p.tokens:.0f}</td>"
        + f"<td>{'on the frontier' if p.on_frontier else DASH}</td>"
        for p in points
    ]
    return f"""<h2>Cost and quality</h2>
<p class=note>Cheapest first. A method is on the frontier when no other is at least as good on
{e(measure)} for as few LLM calls per query: pick the cheapest frontier method that meets your target.</p>
{_table(["Method", measure, "LLM calls/query", "LLM tokens/query", "Frontier"], rows)}
<figure><img src="{e(chart.name)}" alt="{e(alt)}"><figcaption>{e(alt)}</figcaption></figure>
"""


def _td(text: str, limit: int = 160) -> str:
    """An escaped cell; text past ``limit`` (ArguAna's queries are essays) is cut and shown in a tooltip."""
    if len(text) <= limit:
        return f"<td>{html.escape(text) or DASH}</td>"
    return f'<td title="{html.escape(text)}">{html.escape(text[: limit - 1])}…</td>'


def _num(value: float | None, best: float = math.nan) -> str:
    return f"<td class=n><b>{_fmt(value)}</b></td>" if value == best else f"<td class=n>{_fmt(value)}</td>"


def _fallbacks(run: dict) -> str:
    """The fallback share and LLM errors of a run (dashes for runs stored before they were counted)."""
    share, errors = run.get("fallback_share"), run.get("llm_errors")
    shown = DASH if share is None or math.isnan(share) else f"{share:.0%}"
    return f"<td class=n>{shown}</td><td class=n>{DASH if errors is None else errors}</td>"


def _warnings(runs: pl.DataFrame, labels: dict[str, str], warn_share: float | None) -> list[str]:
    if warn_share is None or "fallback_share" not in runs.columns:
        return []
    from tasks.evaluation.provenance import fallback_warning

    out = []
    for run in runs.iter_rows(named=True):
        share = run["fallback_share"]
        if share is not None and not math.isnan(share):
            errors = run.get("llm_errors") or 0
            line = fallback_warning(labels[run["run_id"]], share, run["n_queries"], errors, warn_share)
            out += [line] if line else []
    return out


def _table(header: list[str], rows: list[str]) -> str:
    head = f"<tr>{''.join(f'<th>{html.escape(h)}</th>' for h in header)}</tr>" if header else ""
    return "\n".join([f"<table>{head}", *(f"<tr>{row}</tr>" for row in rows), "</table>"])


def write_report(
    runs: pl.DataFrame,
    metrics: pl.DataFrame,
    query_metrics: pl.DataFrame,
    out_dir: Path,
    *,
    title: str,
    measure: str = "nDCG@10",
    queries: dict[str, str] | None = None,
    warn_share: float | None = None,
    frontier: list[FrontierPoint] | None = None,
) -> Path:
    """Write ``out_dir/report.html`` with its two PNGs beside it and return the HTML path.

    The page needs no network: provenance, scores (best per measure in bold) with the share of queries that
    fell back and the LLM errors, a warning above them for each run whose share passes ``warn_share``, both
    charts and the ``HARDEST`` queries with the lowest mean ``measure`` across methods. With ``frontier``
    (:func:`tasks.evaluation.compare.frontier` on ``measure``), a third chart and table: quality against
    LLM calls per query, the Pareto frontier marked. The HTML goes last, so its charts are in place.
    """
    e = html.escape
    labels = _labels(runs)
    rows = _per_query(runs, query_metrics, measure)  # raises before anything is written
    measures, values = _aggregates(runs, metrics)
    slug = re.sub(r"[^a-z0-9]+", "-", measure.lower()).strip("-")
    comparison = method_comparison_chart(runs, metrics, out_dir / "comparison.png")
    spread = per_query_distribution_chart(runs, query_metrics, measure, out_dir / f"per-query-{slug}.png")
    figures = "\n".join(
        f'<figure><img src="{e(p.name)}" alt="{e(alt)}"><figcaption>{e(alt)}</figcaption></figure>'
        for p, alt in [
            (comparison, f"Grouped bar chart: mean {', '.join(measures)} of each method"),
            (spread, f"Box plot of per-query {measure} for each method, with every query drawn as a dot"),
        ]
    )

    created = sorted(f"{t:%Y-%m-%d %H:%M}" for t in runs["created_at"].drop_nulls())
    provenance: dict[str, list[object]] = {
        "Corpus": runs["corpus"].drop_nulls().to_list(),
        "Test set": runs["testset"].drop_nulls().to_list(),
        "Created (UTC)": [" to ".join(dict.fromkeys(created[:1] + created[-1:]))],
        "Git SHA": runs["git_sha"].drop_nulls().to_list(),
        "Embedding model": runs["embedding_model"].drop_nulls().to_list(),
        "Queries": runs["n_queries"].drop_nulls().to_list(),
    }
    # Runs of one evaluation normally agree on these; where they differ, every distinct value is listed.
    facts = [f"<th>{e(k)}</th>" + _td(", ".join(map(str, dict.fromkeys(v)))) for k, v in provenance.items()]

    best = {
        m: max(_finite([values.get((r, m), math.nan) for r in labels]), default=math.nan) for m in measures
    }
    scores = [
        _td(label)
        + "".join(_num(values.get((run["run_id"], m), math.nan), best[m]) for m in measures)
        + _fallbacks(run)
        + _num(run["retrieval_seconds"])
        for run, label in zip(runs.iter_rows(named=True), labels.values(), strict=True)
    ]
    warnings = "".join(f"<p class=warning>{e(w)}</p>\n" for w in _warnings(runs, labels, warn_share))

    hardest = rows.group_by("query_id").agg(pl.col("value").mean()).sort("value", "query_id", nulls_last=True)
    per_query = {(r, q): v for r, q, v in rows.select("run_id", "query_id", "value").iter_rows()}
    hard = [
        _td(query_id)
        + ("" if queries is None else _td(queries.get(query_id, "")))
        + "".join(_num(per_query.get((r, query_id))) for r in labels)
        + _num(mean)
        for query_id, mean in hardest.head(HARDEST).iter_rows()
    ]

    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title><style>{_CSS}</style></head><body>
<h1>{e(title)}</h1>
<h2>Provenance</h2>
{_table([], facts)}
<h2>Scores</h2>
<p class=note>Mean over queries, higher is better; the best per measure is in bold. Fell back: share of
queries the method's fallback answered (its LLM failed, answered junk, or judged nothing relevant).</p>
{warnings}{_table(["Method", *measures, "Fell back", "LLM errors", "Retrieval (s)"], scores)}
<h2>Charts</h2>
{figures}
{_frontier_section(runs, frontier, measure, out_dir) if frontier else ""}<h2>Hardest queries</h2>
<p class=note>The {HARDEST} queries with the lowest {e(measure)} averaged over methods, hardest first.</p>
{_table(["Query", *(["Text"] if queries is not None else []), *labels.values(), "Mean"], hard)}
</body></html>
"""
    return _write_atomic(out_dir / "report.html", lambda f: f.write(page.encode()))
