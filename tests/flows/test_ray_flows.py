"""With ``ZSR_RAY_ADDRESS`` set, the ``evaluate`` flow fans out through ``Workspace.evaluate_on_ray`` (one
task, published by the flow's process) and writes the artifacts of the local path. The fan-out itself is
tested on a real cluster in tests/integration/test_ray.py; here it is stood in for by the local sequence."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import tasks.workspace
from tasks.settings import get_settings
from tasks.workspace import Workspace
from tests.fakes import FakeEmbedder, make_docs, make_testset, write_beir
from tests.flows.test_flows import artifacts, table


def test_evaluate_flow_fans_out_on_ray_when_an_address_is_set(harness: None, tmp_path: Path) -> None:
    from flows.evaluate import evaluate
    from tasks.ingest.index import reindex

    fake = FakeEmbedder()
    ws = Workspace.open()
    reindex(ws.store, "rayflows", make_docs(12), fake.space, lambda: fake)
    ws.testsets.register("rayflows", "t", write_beir(make_testset("rayflows"), tmp_path / "beir"))
    fanned: list[tuple[str, list[str]]] = []

    def stand_in(
        self: Workspace, corpus: str, testsets: list[str], methods: list[str], *a: Any, **kw: Any
    ) -> Any:
        fanned.append((corpus, list(testsets)))
        kw.pop("compare"), kw.pop("report")
        return [self.evaluate(corpus, t, methods, *a, **kw, compare=True) for t in testsets]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Workspace, "evaluate_on_ray", stand_in)
        mp.setattr(tasks.workspace, "load_embedder", lambda space, *args: FakeEmbedder(space=space))
        mp.setenv("ZSR_RAY_ADDRESS", "127.0.0.1:1")  # never dialled: the stand-in answers
        get_settings.cache_clear()
        try:
            result = evaluate(
                corpus="rayflows", testset="t", methods=["bm25"], metrics=["nDCG@10"], report=False
            )
        finally:
            get_settings.cache_clear()
    assert fanned == [("rayflows", ["t"])]
    assert [r.method for r in result.runs] == ["bm25"]
    rows = table(artifacts("adhoc-rayflows-t-results")[0])
    assert [r["method"] for r in rows] == ["bm25"] and rows[0]["run"] == result.runs[0].run_id
