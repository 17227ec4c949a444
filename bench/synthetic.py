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

from storage.warehouse import Warehouse
from tasks.evaluation.runs import evaluate_methods
from tasks.evaluation.testsets import load, register
from tasks.ingest.views import build_views
from tasks.llm.judge import LLMJudge
from tasks.settings import Settings
from tasks.synthetic.generate import Filters, LLMGenerator, SynthesisReport
from tasks.synthetic.testset import agreement, build_synthetic_testset
from tasks.workspace import ingest, llm_client, open_store, prepare_synthesis, searcher

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
            run(dataset, args.data / dataset, Settings(home=Path(home)), args.docs, args.testset_docs)


def run(dataset: str, folder: Path, settings: Settings, n_docs: int, testset_docs: int) -> None:
    ingest(folder, dataset, fmt="beir", skip_bad=True, settings=settings)
    store, engine, llm = open_store(settings), searcher(dataset, settings), llm_client(settings)
    human, _ = register(settings.testsets_dir, store, dataset, "human", folder)
    # The set-up `zsr synthesize` uses: k-means sample of n_docs, question prompt, round trip in the top 20.
    synthesis = prepare_synthesis(dataset, sample_docs=n_docs, seed=0, roundtrip_k=20, settings=settings)

    def generate() -> tuple[float, SynthesisReport]:
        start = time.perf_counter()
        report = synthesis(None)
        return time.perf_counter() - start, report

    first_s, first = generate()
    store.db.drop_table(f"{dataset}__synthetic_queries")
    again_s, again = generate()
    print(f"\n== {dataset}: {first.documents} documents, model {llm.config.model}")
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
    build_views(store, dataset, engine.embedder_factory)
    warehouse = Warehouse(settings.warehouse_dir)
    results = evaluate_methods(engine, human, METHODS, warehouse, measures=["nDCG@10", "R@100"])
    print(f"{'method':26} nDCG@10  R@100   (human qrels, {len(human.queries)} queries)")
    for r in results:
        print(f"{r.method:26} {r.metrics['nDCG@10']:.3f}   {r.metrics['R@100']:.3f}")
    start = time.perf_counter()
    report = build_synthetic_testset(
        store,
        dataset,
        name="synthetic",
        generator=LLMGenerator(llm),
        judge=LLMJudge(llm),
        searcher=engine,
        root=settings.testsets_dir,
        n_docs=testset_docs,
        seed=1,
        filters=Filters(roundtrip_k=20),
        warehouse=warehouse,
    )
    print(
        f"synthetic test set: {report.queries} queries, {report.judged} judged pairs, "
        f"{report.relevant_pairs} relevant ({time.perf_counter() - start:.0f} s)"
    )
    result = agreement(
        warehouse,
        engine,
        human,
        load(settings.testsets_dir, dataset, "synthetic"),
        ["bm25", "dense", "hybrid", "multiview", "d2q"],
    )
    print(
        f"Kendall tau (synthetic vs human, nDCG@10, 5 methods): {result.kendall_tau:.3f} "
        f"(p = {result.p_value:.3f}); same best method: {result.top1_agree}"
    )
    print("  human:    ", {m: round(v, 3) for m, v in result.human_scores.items()})
    print("  synthetic:", {m: round(v, 3) for m, v in result.synthetic_scores.items()})


if __name__ == "__main__":
    main()
