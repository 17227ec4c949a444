"""``zsr adapt`` on Cranfield and CISI: base against adapted model, dense and hybrid, human qrels, one run.

Usage: python bench/adapt.py [DATA_DIR] [--datasets cranfield,cisi] [--max-steps N] [--max-minutes M]
       [--batch-size B] [--hard-negatives K] [--home DIR]

For each dataset, in a temporary ZSR_HOME (or ``DIR/<dataset>``, kept: a run stopped midway and started
again skips what is done, since ingest, synthesis and adapt are idempotent): ingest it with the default
model, write one extractive (no LLM) query per document (``zsr synthesize --generator extractive``: round
trip in the hybrid top 20), adapt the model on them (mnrl, hard negatives from the corpus's dense search),
ingest the same documents again with the adapted model as a second corpus, and score dense and hybrid of
both corpora on the human test set. Neither corpus refreshes its views, so both search the same views
(chunks) and differ in the model alone.
Printed: nDCG@10 and R@100 of each, the paired t-test and Wilcoxon p of adapted against base per measure,
training steps and seconds, and the dev figures the training reached on its held-out synthetic queries.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from tasks.adapt.examples import AdaptConfig
from tasks.settings import Settings
from tasks.synthetic.config import SynthesisConfig
from tasks.workspace import Workspace

METHODS = ["dense", "hybrid"]
MEASURES = ["nDCG@10", "R@100"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data", nargs="?", type=Path, default=Path(__file__).resolve().parent / "data")
    parser.add_argument("--datasets", default="cranfield,cisi")
    parser.add_argument("--max-steps", type=int, default=60)
    parser.add_argument("--max-minutes", type=float, default=10.0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--hard-negatives", type=int, default=1)
    parser.add_argument("--home", type=Path, help="Keep each dataset's home under this folder.")
    args = parser.parse_args()
    config = AdaptConfig(
        max_steps=args.max_steps,
        max_minutes=args.max_minutes,
        batch_size=args.batch_size,
        hard_negatives=args.hard_negatives,
    )
    for dataset in args.datasets.split(","):
        with tempfile.TemporaryDirectory() as scratch:
            home = args.home / dataset if args.home else Path(scratch)
            run(Workspace.open(Settings(home=home)), dataset, args.data / dataset, config)


def run(ws: Workspace, dataset: str, folder: Path, config: AdaptConfig) -> None:
    start = time.perf_counter()
    ws.ingest(folder, dataset, fmt="beir", skip_bad=True)
    ws.testsets.register(dataset, "human", folder, replace=True)  # a resumed run registers again
    synthesis = ws.prepare_synthesis(dataset, SynthesisConfig(generator="extractive"))(None)
    trained = ws.adapt(dataset, config)
    m = trained.manifest
    adapted = f"{dataset}-adapted"
    ws.ingest(folder, adapted, fmt="beir", skip_bad=True, model=trained.path)
    ws.testsets.register(adapted, "human", folder, replace=True)
    base_runs = ws.evaluate(dataset, "human", METHODS, MEASURES).runs
    adapted_runs = ws.evaluate(adapted, "human", METHODS, MEASURES).runs
    print(f"\n== {dataset}: {synthesis.kept} extractive queries kept ({synthesis.already_done} done before)")
    print(
        f"adapt {m.version}: {m.loss}, {m.steps} steps ({m.stopped}) of batch {m.batch_size} with "
        f"{m.hard_negatives} hard negative(s) in {m.seconds:.0f} s on {m.train_queries} queries; "
        f"{m.extra['excluded_testset_queries']} excluded as test-set queries"
    )
    dev = {name: ", ".join(f"{k} {v:.3f}" for k, v in figures.items()) for name, figures in m.dev.items()}
    print(f"dev ({m.dev_queries} held-out synthetic queries): base {dev['base']}; adapted {dev['adapted']}")
    print("method   measure   base    adapted  delta    t-test p  Wilcoxon p  wins/ties/losses")
    for base, new in zip(base_runs, adapted_runs, strict=True):
        for measure in MEASURES:
            c = ws.compare(base.run_id, new.run_id, measure)
            print(
                f"{base.method:<8} {measure:<9} {c.mean_a:.4f}  {c.mean_b:.4f}   {c.mean_b - c.mean_a:+.4f}  "
                f"{_p(c.t_test_p):>8}  {_p(c.wilcoxon_p):>10}  {c.wins}/{c.ties}/{c.losses}"
            )
    print(f"({time.perf_counter() - start:.0f} s for {dataset} in all)")


def _p(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"


if __name__ == "__main__":
    main()
