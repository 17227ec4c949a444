"""Model upgrade with query drift compensation, side by side: old, compensated, re-indexed; nDCG@10, R@100.

Usage: python bench/upgrade.py [DATA_DIR] [--datasets cranfield,cisi] [--models minilm-l3,rotated]
    [--adapted NAME=PATH ...] [--home DIR]

Each collection is ingested with the default model (MiniLM, the "old" one) into a temporary ZSR_HOME,
given extractive synthetic queries (no LLM) and its title and query views, which the drift map is fit on.
Then, for each new model, through ``Workspace.ingest`` as ``zsr ingest --model`` runs it:

- ``--compensate-only`` with each fit (``ZSR_DRIFT_FIT`` lstsq, then procrustes): the judged queries are
  searched against the old index with the new model, unmapped (``raw``) and mapped
  (``dense(compensate=true)``);
- the full upgrade (the corpus switches to the new model's index): ``dense`` again (``re-indexed``);
- an upgrade back to the old model, so the next new model starts from the same old index (its vectors are
  all in the embedding cache and its views table intact: nothing is encoded again).

New models built here from the packaged MiniLM (no download): ``rotated`` appends a linear layer holding a
random orthogonal matrix (a known linear drift: re-indexing changes no cosine, and compensation should
recover the old figures exactly); ``minilm-l3`` keeps the first 3 of MiniLM's 6 layers (a cheaper, weaker
encoder whose drift is not linear). ``--adapted NAME=PATH`` adds a saved model (e.g. ``zsr adapt``'s).

Printed per collection and model: each row's nDCG@10 and R@100 and the share of the gap between the
unmapped and the re-indexed search that compensation closes: ``(comp - raw) / (reindexed - raw)``.
``--home`` keeps the ZSR_HOME (default: a temporary one), so a run stopped midway resumes from its embedding
cache; the figures do not depend on it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, get_args

import numpy as np

from tasks.evaluation.measures import evaluate, load_qrels, load_queries
from tasks.ingest.embed import Embedder, resolve_model_path, vector_space
from tasks.settings import DEFAULT_MODEL, DriftFit, Settings
from tasks.synthetic.config import SynthesisConfig
from tasks.workspace import Workspace, embedder_factory

MEASURES = ["nDCG@10", "R@100"]
FITS: tuple[DriftFit, ...] = get_args(DriftFit)


def build_models(folder: Path, names: list[str]) -> dict[str, Path]:
    """The new models of ``names`` (module docstring), saved under ``folder``."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense

    built = {}
    for name in names:
        base = SentenceTransformer(resolve_model_path(DEFAULT_MODEL), device="cpu")
        if name == "rotated":
            rotation = np.linalg.qr(np.random.default_rng(17).standard_normal((384, 384)))[0]
            weight = torch.tensor(rotation.T, dtype=torch.float32)  # torch's Linear: x -> x @ weight.T
            layer = Dense(384, 384, bias=False, activation_function=torch.nn.Identity(), init_weight=weight)
            model = SentenceTransformer(modules=[*base, layer], device="cpu")
        elif name == "minilm-l3":
            encoder: Any = base[0].auto_model
            encoder.encoder.layer = encoder.encoder.layer[:3]
            encoder.config.num_hidden_layers = 3
            model = base
        else:
            raise SystemExit(f"unknown new model {name!r}: rotated or minilm-l3 (or --adapted NAME=PATH)")
        model.save(str(folder / name))
        built[name] = folder / name
    return built


def scores(ws: Workspace, corpus: str, queries: dict[str, str], qrels, method: str, embedder=None):
    """nDCG@10 and R@100 of ``method`` over the judged queries; ``embedder`` replaces the corpus's model."""
    searcher = ws.searcher(corpus)
    if embedder is not None:
        searcher.embedder_factory = embedder
    rankings = searcher.search_batch(queries, method, k=100)
    return evaluate(rankings, qrels, MEASURES)


def closed(raw: float, comp: float, full: float) -> str:
    """The share of the raw-to-re-indexed gap compensation closes ('n/a' without a gap)."""
    return f"{(comp - raw) / (full - raw):6.0%}" if abs(full - raw) > 1e-9 else "   n/a"


def row(dataset: str, model: str, what: str, figures: dict[str, float], note: str = "") -> None:
    print(
        f"{dataset:10} {model:10} {what:22} {figures['nDCG@10']:8.3f} {figures['R@100']:7.3f} {note}",
        flush=True,
    )


def bench(ws: Workspace, home: Path, folder: Path, dataset: str, models: dict[str, Path]) -> None:
    queries = load_queries(folder / "queries.jsonl")
    qrels = load_qrels(folder / "qrels" / "test.tsv")
    queries = {q: t for q, t in queries.items() if q in qrels}
    started = time.perf_counter()
    # Cranfield holds two records with neither title nor text (ids 471, 995): skipped, as in bench/quality.py.
    ws.ingest(folder, dataset, fmt="beir", skip_bad=True)
    ws.prepare_synthesis(dataset, SynthesisConfig(generator="extractive"))(None)
    views = ws.refresh_views(dataset)
    print(
        f"# {dataset}: indexed with {DEFAULT_MODEL} in {time.perf_counter() - started:.0f} s; "
        f"{views.query_views} query views, {views.title_views} title views",
        flush=True,
    )
    old = scores(ws, dataset, queries, qrels, "dense")
    row(dataset, DEFAULT_MODEL[:10], "old", old)
    for name, path in models.items():
        new: Callable[[], Embedder] | None = None
        comp: dict[str, dict[str, float]] = {}
        for fit in FITS:
            fitted = Workspace(Settings(home=home, drift_fit=fit))
            report, _ = fitted.ingest(
                folder, dataset, fmt="beir", skip_bad=True, model=str(path), compensate_only=True
            )
            moved = report.upgrade or {}
            if new is None:
                new = embedder_factory(vector_space(str(path)), ws.settings)
                raw = scores(ws, dataset, queries, qrels, "dense", new)
                row(dataset, name, "new, unmapped", raw)
            comp[fit] = scores(ws, dataset, queries, qrels, "dense(compensate=true)")
            row(
                dataset,
                name,
                f"new, compensated {fit}",
                comp[fit],
                f"(map: {moved['pairs']} pairs, {moved['seconds']:.0f} s; held-out cosine "
                f"{moved['cosine_before']:.3f} -> {moved['cosine_after']:.3f})",
            )
        started = time.perf_counter()
        report, _ = ws.ingest(folder, dataset, fmt="beir", skip_bad=True, model=str(path))
        full = scores(ws, dataset, queries, qrels, "dense")
        row(dataset, name, "new, re-indexed", full, f"(upgrade {time.perf_counter() - started:.0f} s)")
        for fit in FITS:
            print(
                f"{dataset:10} {name:10} gap closed by {fit:10}   "
                + "   ".join(f"{m} {closed(raw[m], comp[fit][m], full[m])}" for m in MEASURES),
                flush=True,
            )
        ws.ingest(folder, dataset, fmt="beir", skip_bad=True, model=DEFAULT_MODEL)  # back to the old index


def main() -> int:
    root = Path(__file__).resolve().parent
    parser = argparse.ArgumentParser()
    parser.add_argument("data", nargs="?", type=Path, default=root / "data")
    parser.add_argument("--datasets", default="cranfield,cisi")
    parser.add_argument("--models", default="minilm-l3,rotated")
    parser.add_argument("--adapted", action="append", default=[], help="NAME=PATH of a saved model")
    parser.add_argument("--home", type=Path, help="ZSR_HOME to keep (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = args.home or Path(tmp) / "home"
        models = build_models(
            home.parent if args.home else Path(tmp), [m for m in args.models.split(",") if m]
        )
        models.update(dict(spec.split("=", 1) for spec in args.adapted))
        ws = Workspace.open(Settings(home=home))
        print(f"{'dataset':10} {'model':10} {'search':22} {'nDCG@10':>8} {'R@100':>7}")
        for dataset in args.datasets.split(","):
            bench(ws, home, args.data / dataset, dataset, {k: Path(v) for k, v in models.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
