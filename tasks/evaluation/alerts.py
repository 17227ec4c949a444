"""Regression alerts: which methods got significantly worse than their previous nightly run.

The decision is pure (comparison rows in, regressions out) so it is unit-tested without Prefect; the
``nightly`` flow acts on it (event, ``Regressed`` state) and ``zsr serve`` routes the event (automation).

A method regressed on a test set when both hold:

- its mean on the measure dropped by at least ``min_drop`` (absolute, in the measure's units), and
- the two-sided paired t-test over the queries gives ``p < p_max``.

Why the t-test and not Wilcoxon: the alert is about the mean, and the t-test tests exactly the mean
difference that ``min_drop`` bounds; in IR evaluation it agrees with the randomization test, where
Wilcoxon and the sign test do not (Smucker, Allan and Carterette, CIKM 2007). Wilcoxon also drops tied
queries (the many unchanged nDCG values) and, on the few queries of a small test set, cannot go below
``2 / 2**n`` (0.125 for four queries), so it could never fire there.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from tasks.evaluation.runs import finite

REGRESSED_EVENT = "zsr.evaluation.regressed"
REGRESSED_STATE = "Regressed"  # name of the nightly run's final (failed) state


def corpus_resource(corpus: str) -> str:
    """The ``prefect.resource.id`` of a corpus in zsr's events (``zsr.corpus.<name>``)."""
    return f"zsr.corpus.{corpus}"


@dataclass(frozen=True)
class Regression:
    """One method on one test set, significantly worse than its previous run."""

    testset: str
    method: str
    measure: str
    before: float
    after: float
    delta: float
    p: float
    run: str
    previous: str

    def line(self) -> str:
        """``human/bm25: nDCG@10 0.6000 -> 0.2000 (-0.4000, t-test p 0.003)``."""
        return (
            f"{self.testset}/{self.method}: {self.measure} {self.before:.4f} -> {self.after:.4f} "
            f"({self.delta:+.4f}, t-test p {self.p:.3g})"
        )

    def as_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict (event payloads)."""
        return asdict(self)


def find_regressions(
    rows: Iterable[Mapping[str, Any]], measure: str, p_max: float, min_drop: float
) -> list[Regression]:
    """The rows that are regressions, in their order.

    Args:
        rows: The nightly comparison rows: ``testset``, ``method``, ``run`` and, where a previous run
            exists, ``previous``, ``before``, ``after`` (means of ``measure``) and ``t_test_p``.
        measure: The measure the rows compare (named in each regression).
        p_max: A drop is significant when the paired t-test's p is below this.
        min_drop: A drop smaller than this (absolute) is no regression, however significant.

    A row without a previous run, or whose p is undefined (``None``/NaN: every query tied, or a single
    query), is never a regression; neither is an improvement, whatever its p.
    """
    found = []
    for row in rows:
        if "previous" not in row:
            continue
        p, before, after = (finite(row.get(k)) for k in ("t_test_p", "before", "after"))
        if p is None or before is None or after is None:
            continue
        delta = after - before
        if p < p_max and -delta >= min_drop and delta < 0:
            found.append(
                Regression(
                    testset=row["testset"],
                    method=row["method"],
                    measure=measure,
                    before=before,
                    after=after,
                    delta=delta,
                    p=p,
                    run=row["run"],
                    previous=row["previous"],
                )
            )
    return found


def summary(corpus: str, regressions: list[Regression]) -> str:
    """One line per regression under a heading line naming the corpus (state messages, notifications)."""
    head = f"{len(regressions)} regression(s) on {corpus}"
    return "; ".join([head, *(r.line() for r in regressions)])
