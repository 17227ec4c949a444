"""Which fusion `hybrid` uses by default: RRF against weighted min-max score fusion, decided on the evidence.

Usage: python bench/fusion.py [--data DIR] [--datasets cranfield,cisi,limit-small] [--queries N]
           [--settings LABEL,...] [--home DIR]
Ingests each collection once into a temporary ZSR_HOME (bench/quality.py's `load`; every setting then
searches the same index, nothing is embedded twice), evaluates bm25, dense and each hybrid setting below
through `zsr eval`'s path over every judged query (the first N with --queries), prints nDCG@10 and R@100 in
one table, then, when it ran every setting on both dev collections, applies the README's decision rule
("Fusion default") and prints the default it picks. LIMIT-small is reported and never votes: it is
adversarial by design.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from quality import load
from query_methods import MEASURES, subset

from tasks.settings import Settings
from tasks.workspace import Workspace

# Every setting spelled out in full, so the table does not move when a default does.
SETTINGS = {
    "bm25": "bm25",
    "dense": "dense",
    "rrf k=10": "hybrid(fusion=rrf, rrf_k=10, dense_weight=1, bm25_weight=1)",
    "rrf k=60": "hybrid(fusion=rrf, rrf_k=60, dense_weight=1, bm25_weight=1)",
    "rrf k=100": "hybrid(fusion=rrf, rrf_k=100, dense_weight=1, bm25_weight=1)",
    "score w=0.3": "hybrid(fusion=score, dense_weight=0.3, bm25_weight=0.7)",
    "score w=0.5": "hybrid(fusion=score, dense_weight=0.5, bm25_weight=0.5)",
    "score w=0.7": "hybrid(fusion=score, dense_weight=0.7, bm25_weight=0.3)",
}
# Each family's free parameter (rrf_k, dense_weight) and the value it takes untuned.
FAMILIES = {
    "rrf": ("rrf k=10", "rrf k=60", "rrf k=100"),
    "score": ("score w=0.3", "score w=0.5", "score w=0.7"),
}
UNTUNED = {"rrf": "rrf k=60", "score": "score w=0.5"}
INCUMBENT = "rrf k=60"
DEV = ("cranfield", "cisi")
MARGIN = 0.005  # nDCG@10: a gain no larger than this is a tie, and a tie goes to the incumbent

Figures = dict[tuple[str, str], float]  # (setting, dataset) -> nDCG@10


def dev_mean(ndcg: Figures, setting: str) -> float:
    """Mean nDCG@10 of ``setting`` over the dev collections."""
    return sum(ndcg[setting, d] for d in DEV) / len(DEV)


def top(ndcg: Figures, settings: tuple[str, ...], dataset: str, untuned: str) -> str:
    """The setting of ``settings`` with the best nDCG@10 on ``dataset``, ties going to ``untuned``."""
    return max(settings, key=lambda s: (ndcg[s, dataset], s == untuned))


def decide(ndcg: Figures) -> tuple[str, list[str]]:
    """The default the README's rule picks from the dev collections' nDCG@10, and the reasons, one a line.

    Each family puts forward the value of its parameter chosen on Cranfield alone if CISI alone chooses the
    same one, else its untuned value (a value two collections disagree on is fit to one of them); each
    choice is shown on the other collection. A candidate replaces the incumbent only if its dev mean beats
    the incumbent's by more than MARGIN and it is not more than MARGIN below it on either collection.
    """
    reasons: list[str] = []
    candidates: list[str] = []
    for family, settings in FAMILIES.items():
        picks = {d: top(ndcg, settings, d, UNTUNED[family]) for d in DEV}
        for chosen_on, held_out in (DEV, DEV[::-1]):
            pick = picks[chosen_on]
            got, gain = ndcg[pick, held_out], ndcg[pick, held_out] - ndcg[INCUMBENT, held_out]
            reasons.append(
                f"{family}: chosen on {chosen_on}: {pick}; on {held_out} it scores {got:.3f} "
                f"({gain:+.3f} against {INCUMBENT})"
            )
        agreed = len(set(picks.values())) == 1
        candidates.append(picks[DEV[0]] if agreed else UNTUNED[family])
        verdict = "both agree" if agreed else "they disagree"
        reasons.append(f"{family} puts forward {candidates[-1]} ({verdict})")
    best, best_mean = INCUMBENT, dev_mean(ndcg, INCUMBENT)
    for candidate in candidates:
        # Rounded so that float noise cannot turn a difference of exactly MARGIN into more or less than it.
        gain = round(dev_mean(ndcg, candidate) - dev_mean(ndcg, INCUMBENT), 9)
        worst = round(min(ndcg[candidate, d] - ndcg[INCUMBENT, d] for d in DEV), 9)
        wins = candidate != INCUMBENT and gain > MARGIN and worst >= -MARGIN
        if candidate != INCUMBENT:
            reasons.append(
                f"{candidate}: dev mean {gain:+.3f} against {INCUMBENT}, worst collection {worst:+.3f}: "
                f"{'beats it' if wins else 'does not beat it'} (margin {MARGIN})"
            )
        if wins and dev_mean(ndcg, candidate) > best_mean:
            best, best_mean = candidate, dev_mean(ndcg, candidate)
    return best, reasons


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parent / "data")
    parser.add_argument("--datasets", default="cranfield,cisi,limit-small")
    parser.add_argument("--queries", type=int, default=None, help="first N judged queries of each (all)")
    parser.add_argument("--settings", default=",".join(SETTINGS), help="labels of the settings to run (all)")
    parser.add_argument(
        "--home",
        type=Path,
        default=None,
        help="search the collections an earlier run ingested into this home (default: ingest into a fresh "
        "one); several runs, each with some --settings, can then share one index on a busy machine",
    )
    args = parser.parse_args()
    datasets, labels = args.datasets.split(","), args.settings.split(",")
    figures: dict[tuple[str, str], tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as fresh:
        ws = Workspace.open(Settings(home=args.home or Path(fresh)))
        for dataset in datasets:
            human = ws.testsets.load(dataset, "human") if args.home else load(ws, args.data, dataset)
            testset = subset(human, args.queries)
            runs = ws.evaluate(dataset, testset, [SETTINGS[label] for label in labels], MEASURES).runs
            for label, run in zip(labels, runs, strict=True):
                figures[label, dataset] = (run.metrics["nDCG@10"], run.metrics["R@100"])
                print(f"{dataset} {label}: {run.metrics['nDCG@10']:.4f} / {run.metrics['R@100']:.4f}")
    decides = set(DEV) <= set(datasets) and labels == list(SETTINGS)
    header = " ".join(f"{d[:11] + ' nDCG/R@100':>23}" for d in datasets)
    print(f"\n{'setting':12} {header}{'  dev nDCG@10' if decides else ''}")
    for label in labels:
        cells = " ".join(f"{figures[label, d][0]:>15.3f} / {figures[label, d][1]:.3f}" for d in datasets)
        mean = f"  {dev_mean({k: v[0] for k, v in figures.items()}, label):11.3f}" if decides else ""
        print(f"{label:12} {cells}{mean}")
    if decides:
        default, reasons = decide({k: v[0] for k, v in figures.items()})
        print("\n" + "\n".join(reasons))
        print(f"decision: {default} ({SETTINGS[default]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
