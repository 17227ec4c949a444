"""Run records for tests that need a published-looking run without evaluating anything."""

from __future__ import annotations

from datetime import UTC, datetime

from tasks.evaluation.runs import RunResult


def run_result(
    run_id: str,
    method: str,
    metrics: dict[str, float],
    n_queries: int = 6,
    *,
    retrieval_seconds: float = 1.0,
    fallback_share: float = 0.0,
    llm_errors: int = 0,
    corpus: str = "c",
    testset: str = "t",
) -> RunResult:
    """A :class:`RunResult` with the given figures; every other field a plausible constant."""
    return RunResult(
        run_id=run_id,
        eval_id="20260101-000000-abcdef",
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        corpus=corpus,
        testset=testset,
        testset_hash="hash",
        method=method,
        method_name=method.split("(")[0],
        params="{}",
        depth=100,
        embedding_model="fake-bow",
        vector_space="0123456789abcdef",
        llm_model=None,
        git_sha=None,
        packages="{}",
        documents_version=1,
        views_version=1,
        n_queries=n_queries,
        retrieval_seconds=retrieval_seconds,
        eval_seconds=0.1,
        fallback_share=fallback_share,
        llm_errors=llm_errors,
        metrics=metrics,
    )
