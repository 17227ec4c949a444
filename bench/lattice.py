"""LATTICE's walk beside rede-rf and rerank, with a simulation judge: nDCG@10, R@100, judge calls per query.

Usage: PYTHONPATH=. python bench/lattice.py [--data DIR] [--datasets cranfield,cisi] [--queries N]
           [--branching B] [--methods SPECS] [--accuracies 1,0.9,0.8,0.7]

Ingests each collection into a temporary ZSR_HOME (bad records skipped), builds its LATTICE tree without
an LLM (extractive summaries: the simulation judge reads node ids, not text), and evaluates every method
through the same path as `zsr eval`, once per judge, counting the judge's calls per query.

The simulation judge knows the human qrels: a node is relevant when a relevant document lies under it
(:func:`tasks.methods.lattice.subtree_qrels`), a document when it is judged relevant. It errs on a share
``1 - accuracy`` of the (query, node or document) pairs:
  independent: each pair's error is its own draw;
  correlated: half of the errors are shared by siblings (the children of one tree node, for one query:
      a judge that misreads a topic misreads its whole slate), the rest drawn per pair.
rede-rf and rerank meet the same judge (a document's siblings are those of its tree leaf), so their rows
show the same noise. Plumbing check: `--datasets cranfield --queries 5 --accuracies 1`.
"""

from __future__ import annotations

import argparse
import random
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from query_methods import subset  # bench/ is on the path of a bench script

from tasks.llm.judge import Judgement, OracleJudge, Pair
from tasks.methods.lattice import Tree, subtree_qrels
from tasks.settings import Settings
from tasks.workspace import Workspace

MEASURES = ["nDCG@10", "R@100"]
METHODS = "rerank,rede-rf,lattice(max_calls=20),lattice,lattice(beam=3, max_calls=60)"
SHARED = 0.5  # of the errors, under correlated noise


class SimulationJudge(OracleJudge):
    """The subtree oracle with errors at ``1 - accuracy``, ``shared`` of them common to a slate of siblings.

    Every decision hangs on (seed, query, pair) or (seed, query, parent) alone: the same in every batch.
    Counts the pairs judged per query in ``calls``.
    """

    def __init__(
        self,
        tree: Tree,
        qrels: dict[str, dict[str, int]],
        accuracy: float,
        shared: float = 0.0,
        seed: int = 0,
    ) -> None:
        super().__init__(subtree_qrels(tree, qrels))
        self.tree, self.seed = tree, seed
        self.slate = (1 - accuracy) * shared  # P(a slate errs together)
        self.own = (1 - accuracy - self.slate) / (1 - self.slate)  # so P(error) = 1 - accuracy overall
        kind = f", correlated={shared}" if shared else ""
        self.name = f"simulation(accuracy={accuracy}{kind}, seed={seed})"
        self.calls: Counter[str] = Counter()

    def judge(self, pairs: Sequence[Pair]) -> list[Judgement]:
        """The subtree truth of each pair, or its flip."""
        out = []
        for truth in super().judge(pairs):
            q, d = truth.query_id, truth.doc_id
            self.calls[q] += 1
            slate = random.Random(f"{self.seed}:{q}:slate:{self.tree.parent(d)}").random() < self.slate
            flip = slate or random.Random(f"{self.seed}:{q}:{d}").random() < self.own
            grade = truth.grade or 0
            out.append(self._judgement(q, d, (0 if grade else 1) if flip else grade))
        return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parent / "data")
    parser.add_argument("--datasets", default="cranfield,cisi")
    parser.add_argument("--queries", type=int, default=None, help="judged queries per collection (all)")
    parser.add_argument("--branching", type=int, default=10)
    parser.add_argument("--methods", default=METHODS, help="the judged methods, comma-separated")
    parser.add_argument("--accuracies", default="1,0.9,0.8,0.7")
    args = parser.parse_args()
    from tasks.methods.registry import split_methods

    methods = split_methods(args.methods)
    accuracies = [float(a) for a in args.accuracies.split(",")]
    with tempfile.TemporaryDirectory() as home:
        ws = Workspace.open(Settings(home=Path(home)))
        for dataset in args.datasets.split(","):
            folder = args.data / dataset
            ws.ingest(folder, dataset, fmt="beir", skip_bad=True)
            human, _ = ws.testsets.register(dataset, "human", folder)
            testset = subset(human, args.queries)
            built = ws.build_lattice(dataset, branching=args.branching, llm=False)
            tree = ws.searcher(dataset).lattice()
            depth = max(len(tree.path(d)) for d in tree.doc_ids())
            print(
                f"\n{dataset}: {len(testset.queries)} queries, {built.documents} documents, tree of "
                f"{built.nodes} nodes (branching {args.branching}, deepest leaf {depth} levels down)"
            )
            print(f"{'judge':30} {'method':34} {'nDCG@10':>7} {'R@100':>6} {'calls/query':>11}")
            for accuracy in accuracies:
                for shared in (0.0, SHARED) if accuracy < 1 else (0.0,):
                    label = f"{accuracy:.0%} " + ("correlated" if shared else "independent")
                    label = "perfect" if accuracy == 1 else label
                    for method in methods:
                        judge = SimulationJudge(tree, human.qrels, accuracy, shared)
                        (run,) = ws.evaluate(dataset, testset, [method], MEASURES, judge=judge).runs
                        calls = sum(judge.calls.values()) / len(testset.queries)
                        print(
                            f"{label:30} {run.method:34} {run.metrics['nDCG@10']:7.3f} "
                            f"{run.metrics['R@100']:6.3f} {calls:11.1f}",
                            flush=True,
                        )
            for base in ws.evaluate(dataset, testset, ["dense", "hybrid"], MEASURES).runs:
                print(
                    f"{'-':30} {base.method:34} {base.metrics['nDCG@10']:7.3f} {base.metrics['R@100']:6.3f} 0"
                )


if __name__ == "__main__":
    main()
