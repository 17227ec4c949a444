"""A one-page HTML report of one evaluation: provenance, aggregate scores, two charts, the hardest queries.

The warehouse hands in polars frames; this module only renders them. Every file is written under a temporary
name beside its destination and then moved into place, so a reader never sees a half-written report.
matplotlib is imported inside the chart functions, so importing this module stays cheap.
"""

from __future__ import annotations

import html
import math
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING

import polars as pl

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DASH = "–"
HARDEST = 10
_CSS = """
body{font:15px/1.45 system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}th,td{padding:.3em .7em;border-bottom:1px solid #ddd}
th{text-align:left;background:#f4f4f4}td.n{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%}figure{margin:1em 0 2em}figcaption,.note{color:#555;font-size:.9em}
"""


def _fmt(value: float | None) -> str:
    return DASH if value is None or math.isnan(value) else f"{value:.3f}"


def _finite(values: list[float]) -> list[float]:
    return [v for v in values if v is not None and not math.isnan(v)]


def _labels(runs: pl.DataFrame) -> dict[str, str]:
    """``{run_id: label}`` in the order of ``runs``: the method, plus the run id when two runs share it."""
    if runs.is_empty():
        raise ValueError(
            "no runs to report: the `runs` frame is empty; check the eval_id asked of the warehouse"
        )
    methods = runs["method"].to_list()
    return {
        run_id: method if methods.count(method) == 1 else f"{method} [{run_id}]"
        for run_id, method in zip(runs["run_id"].to_list(), methods, strict=True)
    }


def _wrap(label: str, width: int = 30) -> str:
    """Break after commas, parentheses and spaces: method strings have few spaces but many commas."""
    lines = [""]
    for token in re.split(r"(?<=[,( ])", label):
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
        have = ", ".join(mine["measure"].unique().sort().to_list()) or "none"
        raise ValueError(f"no per-query values of {measure!r} for these runs (measures present: {have})")
    return rows.with_columns(pl.col("value").fill_nan(None))


def _figure(width: float, height: float) -> Figure:
    # A bare Figure on an Agg canvas, not pyplot: no global state, so concurrent tasks cannot collide.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _colour(i: int) -> tuple[float, ...]:
    from matplotlib import colormaps

    return tuple(colormaps["tab10"](i % 10))


def _write_atomic(path: Path, write: Callable[[IO[bytes]], object]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as tmp:
        try:
            write(tmp)
        except BaseException:
            tmp.close()
            Path(tmp.name).unlink()
            raise
    Path(tmp.name).chmod(0o644)  # mkstemp makes 0600 files, which a web server could not serve
    Path(tmp.name).replace(path)
    return path


def method_comparison_chart(runs: pl.DataFrame, metrics: pl.DataFrame, path: Path) -> Path:
    """Grouped bar chart (one group per measure, one bar per method, value on each bar) written as PNG."""
    labels = _labels(runs)
    measures, values = _aggregates(runs, metrics)
    n = len(labels)
    width = 0.8 / n
    upright = n > 3  # side by side, three-decimal labels overlap once bars get narrow
    figure = _figure(max(6.5, 1.5 + len(measures) * (0.4 + 0.42 * n)), 4.6 + 0.3 * math.ceil(n / 2))
    ax = figure.subplots()
    for i, (run_id, label) in enumerate(labels.items()):
        heights = [values.get((run_id, m), math.nan) for m in measures]
        xs = [j + (i - (n - 1) / 2) * width for j in range(len(measures))]
        bars = ax.bar(
            xs, [0.0 if math.isnan(h) else h for h in heights], width, label=_wrap(label), color=_colour(i)
        )
        ax.bar_label(bars, [_fmt(h) for h in heights], padding=2, fontsize=8, rotation=90 if upright else 0)
    top = max(_finite(list(values.values())), default=0.0) or 1.0
    ax.set_ylim(0, top * (1.22 if upright else 1.1))
    ax.set_xticks(range(len(measures)), measures)
    ax.set_ylabel("mean over queries (higher is better)")
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    figure.legend(loc="outside lower center", ncols=min(n, 2), frameon=False, fontsize=9)
    return _write_atomic(path, lambda f: figure.savefig(f, format="png"))


def per_query_distribution_chart(
    runs: pl.DataFrame, query_metrics: pl.DataFrame, measure: str, path: Path
) -> Path:
    """Per-query ``measure`` per method as PNG: a box plot, every query as a jittered point, mean as a diamond.

    Methods run down the y axis so long method strings read horizontally however many there are.
    """
    import numpy as np
    from matplotlib.lines import Line2D

    labels = _labels(runs)
    rows = _per_query(runs, query_metrics, measure)
    data = [_finite(rows.filter(pl.col("run_id") == r)["value"].to_list()) for r in labels]
    n = len(labels)
    positions = list(range(n, 0, -1))  # the first method on top, as in the tables
    figure = _figure(8.5, 1.6 + 0.8 * n)
    ax = figure.subplots()
    boxes = ax.boxplot(
        data,
        positions=positions,
        orientation="horizontal",
        widths=0.6,
        patch_artist=True,
        showfliers=False,  # every query is drawn as a point already
        showmeans=True,
        meanprops={"marker": "D", "markerfacecolor": "white", "markeredgecolor": "black", "zorder": 4},
        medianprops={"color": "black"},
    )
    rng = np.random.default_rng(0)  # fixed seed: the same data draws the same picture
    for i, (box, values, y) in enumerate(zip(boxes["boxes"], data, positions, strict=True)):
        box.set(facecolor=(*_colour(i)[:3], 0.25), edgecolor=_colour(i))
        jitter = rng.uniform(-0.2, 0.2, len(values))
        ax.scatter(values, y + jitter, s=12, color=_colour(i), alpha=0.6, linewidths=0, zorder=3)
    ax.set_yticks(
        positions, [f"{_wrap(label)}\n(n={len(v)})" for label, v in zip(labels.values(), data, strict=True)]
    )
    ax.set_xlabel(f"{measure} per query (higher is better)")
    ax.set_title(f"Per-query {measure}: box = quartiles, line = median, dots = queries", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    mean = Line2D([], [], marker="D", linestyle="", markerfacecolor="white", markeredgecolor="black")
    figure.legend([mean], ["mean"], loc="outside upper right", frameon=False, fontsize=9)
    return _write_atomic(path, lambda f: figure.savefig(f, format="png"))


def _td(text: str, limit: int = 160) -> str:
    """An escaped cell; text past ``limit`` (ArguAna's queries are whole essays) is cut but kept as tooltip."""
    short = text if len(text) <= limit else text[: limit - 1] + "…"
    return f'<td title="{html.escape(text)}">{html.escape(short) or DASH}</td>'


def _num(value: float | None, bold: bool = False) -> str:
    return f"<td class=n><b>{_fmt(value)}</b></td>" if bold else f"<td class=n>{_fmt(value)}</td>"


def _table(header: list[str], rows: list[str]) -> str:
    """A table from a header of plain text and rows of ready-made cells."""
    head = "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>" if header else ""
    return f"<table>{head}" + "".join(f"<tr>{row}</tr>" for row in rows) + "</table>"


def write_report(
    runs: pl.DataFrame,
    metrics: pl.DataFrame,
    query_metrics: pl.DataFrame,
    out_dir: Path,
    *,
    title: str,
    measure: str = "nDCG@10",
    queries: dict[str, str] | None = None,
) -> Path:
    """Write ``out_dir/report.html`` with its two PNGs beside it and return the HTML path.

    The page stands alone (no network): provenance, aggregate scores with the best per measure in bold, both
    charts, and the ``HARDEST`` queries with the lowest mean ``measure`` across methods. The HTML is written
    last, so its charts are in place by the time it appears.
    """
    e = html.escape
    labels = _labels(runs)
    rows = _per_query(runs, query_metrics, measure)  # raises before anything is written
    measures, values = _aggregates(runs, metrics)
    slug = re.sub(r"[^a-z0-9]+", "-", measure.lower()).strip("-")
    charts = {
        method_comparison_chart(runs, metrics, out_dir / "comparison.png"): (
            f"Grouped bar chart: mean {', '.join(measures)} of each method"
        ),
        per_query_distribution_chart(runs, query_metrics, measure, out_dir / f"per-query-{slug}.png"): (
            f"Box plot of per-query {measure} for each method, with every query drawn as a dot"
        ),
    }
    figures = "".join(
        f'<figure><img src="{e(p.name)}" alt="{e(alt)}"><figcaption>{e(alt)}</figcaption></figure>'
        for p, alt in charts.items()
    )

    created = sorted({f"{t:%Y-%m-%d %H:%M}" for t in runs["created_at"].drop_nulls()})
    provenance = {
        "Corpus": runs["corpus"],
        "Test set": runs["testset"],
        "Created (UTC)": [" to ".join(dict.fromkeys(created[:1] + created[-1:]))],
        "Git SHA": runs["git_sha"],
        "Embedding model": runs["embedding_model"],
        "Queries": runs["n_queries"],
        "Runs": runs["run_id"],
    }
    # Runs of one evaluation normally agree on these; where they differ, every distinct value is listed.
    facts = [
        f"<th>{e(name)}</th>" + _td(", ".join(str(v) for v in dict.fromkeys(column) if v is not None))
        for name, column in provenance.items()
    ]

    best = {m: max(_finite([values.get((r, m), math.nan) for r in labels]), default=None) for m in measures}
    timings = {
        r: (t, s) for r, t, s in runs.select("run_id", "retrieval_seconds", "eval_seconds").iter_rows()
    }
    scores = []
    for run_id, label in labels.items():
        cells = [values.get((run_id, m), math.nan) for m in measures]
        scores.append(
            _td(label)
            + "".join(_num(v, v == best[m]) for v, m in zip(cells, measures, strict=True))
            + "".join(_num(t) for t in timings[run_id])
        )

    hardest = (
        rows.group_by("query_id")
        .agg(pl.col("value").mean().alias("mean"))
        .sort(["mean", "query_id"], nulls_last=True)
        .head(HARDEST)
    )
    per_query = {(r, q): v for r, q, v in rows.select("run_id", "query_id", "value").iter_rows()}
    hard = [
        _td(query_id)
        + ("" if queries is None else _td(queries.get(query_id, "")))
        + "".join(_num(per_query.get((r, query_id))) for r in labels)
        + _num(mean)
        for query_id, mean in hardest.iter_rows()
    ]
    text = [] if queries is None else ["Text"]

    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title><style>{_CSS}</style></head><body>
<h1>{e(title)}</h1>
<h2>Provenance</h2>{_table([], facts)}
<h2>Scores</h2><p class=note>Mean over queries, higher is better; the best per measure is in bold.</p>
{_table(["Method", *measures, "Retrieval (s)", "Evaluation (s)"], scores)}
<h2>Charts</h2>{figures}
<h2>Hardest queries</h2><p class=note>The {HARDEST} queries with the lowest {e(measure)} averaged over methods,
hardest first.</p>
{_table(["Query", *text, *labels.values(), "Mean"], hard)}
</body></html>
"""
    return _write_atomic(out_dir / "report.html", lambda f: f.write(page.encode()))
