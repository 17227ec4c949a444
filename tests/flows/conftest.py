"""One Prefect test harness for the whole flows tier, and a small real corpus in a temporary ZSR_HOME.

The flows run in this process against the harness's server, on a slice of the bundled Cranfield demo with
the real embedding model (loaded once per process), so they exercise exactly what a deployment runs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import zsr_home_at

DEMO = Path(__file__).resolve().parents[2] / "demo" / "cranfield"
HARNESS_STARTUP_SECONDS = 300  # a 2-core machine needs far more than Prefect's default 30 s


def write_slice(dest: Path, queries: int = 4, extra_docs: int = 20, skip_docs: int = 0) -> Path:
    """A BEIR folder: the first ``queries`` judged queries, their judged documents and ``extra_docs`` more.

    ``skip_docs`` leaves out that many of the extra documents, so a later, fuller slice adds new ones.
    """
    lines = (DEMO / "qrels" / "test.tsv").read_text().splitlines()
    qrels = [line for line in lines[1:] if int(line.split("\t")[0]) <= queries]
    judged = {line.split("\t")[1] for line in qrels}
    docs = [json.loads(line) for line in (DEMO / "corpus.jsonl").read_text().splitlines()]
    extra = [d["_id"] for d in docs if d["_id"] not in judged][skip_docs:extra_docs]
    keep = judged | set(extra)
    (dest / "qrels").mkdir(parents=True, exist_ok=True)
    (dest / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs if d["_id"] in keep))
    query_lines = (DEMO / "queries.jsonl").read_text().splitlines()
    (dest / "queries.jsonl").write_text(
        "".join(line + "\n" for line in query_lines if int(json.loads(line)["_id"]) <= queries)
    )
    (dest / "qrels" / "test.tsv").write_text("\n".join([lines[0], *qrels]) + "\n")
    return dest


@pytest.fixture(scope="session")
def zsr_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with zsr_home_at(tmp_path_factory.mktemp("zsr-home")) as home:
        yield home


@pytest.fixture(scope="session")
def harness(zsr_home: Path) -> Iterator[None]:
    from prefect.settings import PREFECT_HOME, PREFECT_LOCAL_STORAGE_PATH, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    home = zsr_home / "prefect"  # cached task results and the server's memos, not ~/.prefect
    with (
        pytest.MonkeyPatch.context() as mp,
        temporary_settings({PREFECT_HOME: home, PREFECT_LOCAL_STORAGE_PATH: home / "storage"}),
    ):
        mp.setenv("PREFECT_HOME", str(home))  # for the harness's server process
        with prefect_test_harness(server_startup_timeout=HARNESS_STARTUP_SECONDS):
            yield


@pytest.fixture(scope="session")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_slice(tmp_path_factory.mktemp("slice") / "cranfield")
