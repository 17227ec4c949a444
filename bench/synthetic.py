"""Synthetic queries, multi-view, doc expansion and synthetic test sets on Cranfield and CISI, in one run.

Usage: python bench/synthetic.py [DATA_DIR] [--docs N] [--testset-docs M] [--datasets cranfield,cisi]
For each dataset, in a temporary ZSR_HOME with the default (bundled) LLM:
1. generation throughput: one question for each of N diverse documents (queries/s, tokens/s);
2. a cached re-run: the same generation with the stored queries dropped, so every call must come from the
   LLM cache, against the first run's time (target <= 5%);
3. nDCG@10 / R@100 of multiview and d2q (built from those queries) against dense and hybrid, human qrels;
4. a synthetic test set (M documents, pools of bm25/dense/hybrid judged by the same LLM) and the Kendall
   tau of its ranking of five methods against the human qrels.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from tasks.settings import Settings
from tasks.synthetic.config import SynthesisConfig
from tasks.synthetic.generate import SynthesisReport
from tasks.workspace import Workspace

METHODS = ["dense", "hybrid", "multiview", "multiview(agg=weighted)", "bm25", "d2q"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data", nargs="?", type=Path, default=Path(__file__).resolve().parent / "data")
    parser.add_argument("--docs", type=int, default=300)
    parser.add_argument("--testset-docs", type=int, default=30)
    parser.add_argument("--datasets", default="cranfield,cisi")
    args = parser.parse_args()
    for dataset in args.datasets.split(","):
        with tempfile.TemporaryDirectory() as home:
            ws = Workspace.open(Settings(home=Path(home)))
            run(ws, dataset, args.data / dataset, args.docs, args.testset_docs)


def run(ws: Workspace, dataset: str, folder: Path, n_docs: int, testset_docs: int) -> None:
    ws.ingest(folder, dataset, fmt="beir", skip_bad=True)
    human, _ = ws.testsets.register(dataset, "human", folder)
    # The set-up `zsr synthesize` uses: k-means sample of n_docs, question prompt, round trip in the top 20.
    synthesis = ws.prepare_synthesis(dataset, SynthesisConfig(sample_docs=n_docs, seed=0, roundtrip_k=20))

    def generate() -> tuple[float, SynthesisReport]:
        start = time.perf_counter()
        report = synthesis(None)
        return time.perf_counter() - start, report

    first_s, first = generate()
    ws.forget_synthetic_queries(dataset)
    again_s, again = generate()
    print(f"\n== {dataset}: {first.documents} documents, model {ws.llm.config.model}")
    print(
        f"generation: {first.generated} queries in {first_s:.1f} s = "
        f"{first.generated / first_s:.2f} queries/s, "
        f"{first.tokens_out / first_s:.1f} tokens/s out ({first.tokens_in} in, {first.tokens_out} out); "
        f"{first.kept} kept, rejected {first.rejected}"
    )
    print(
        f"cached re-run: {again_s:.1f} s = {again_s / first_s:.1%} of the first run (target <= 5%); "
        f"{again.cache_hits}/{again.llm_calls} calls from cache"
    )
    ws.refresh_views(dataset)
    results = ws.evaluate(dataset, "human", METHODS, ["nDCG@10", "R@100"]).runs
    print(f"{'method':26} nDCG@10  R@100   (human qrels, {len(human.queries)} queries)")
    for r in results:
        print(f"{r.method:26} {r.metrics['nDCG@10']:.3f}   {r.metrics['R@100']:.3f}")
    start = time.perf_counter()
    report = ws.synthesize_testset(
        dataset, "synthetic", SynthesisConfig(sample_docs=testset_docs, seed=1, roundtrip_k=20)
    )
    print(
        f"synthetic test set: {report.queries} queries, {report.judged} judged pairs, "
        f"{report.relevant_pairs} relevant ({time.perf_counter() - start:.0f} s)"
    )
    result = ws.agreement(dataset, "human", "synthetic", ["bm25", "dense", "hybrid", "multiview", "d2q"])
    print(
        f"Kendall tau (synthetic vs human, nDCG@10, 5 methods): {result.kendall_tau:.3f} "
        f"(p = {result.p_value:.3f}); same best method: {result.top1_agree}"
    )
    print("  human:    ", {m: round(v, 3) for m, v in result.human_scores.items()})
    print("  synthetic:", {m: round(v, 3) for m, v in result.synthetic_scores.items()})


if __name__ == "__main__":
    main()
