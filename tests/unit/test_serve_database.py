"""``zsr serve`` on another database and beside other workers (flows.cli.serve): what it hands to Prefect.

The real thing (PostgreSQL, two workers) is tests/integration/test_prefect_postgres.py; these check the
settings' way through without starting anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from flows.cli.serve import Stack
from tasks.settings import get_settings
from tests.conftest import zsr_home_at

URL_KEY = "PREFECT_SERVER_DATABASE_CONNECTION_URL"
FROM_SETTING = "postgresql+asyncpg://prefect:s3cret@db:5432/prefect"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    monkeypatch.delenv(URL_KEY, raising=False)
    with zsr_home_at(tmp_path / "home") as path:
        yield path


def test_database_from_the_setting_and_the_option_wins(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert URL_KEY not in Stack(port=1).env  # neither: Prefect's SQLite under PREFECT_HOME
    monkeypatch.setenv("ZSR_PREFECT_DATABASE_URL", FROM_SETTING)
    get_settings.cache_clear()
    assert Stack(port=1).env[URL_KEY] == FROM_SETTING
    option = "postgresql+asyncpg://other@host/prefect"
    assert Stack(port=1, database=option).env[URL_KEY] == option
    assert "s3cret" not in repr(get_settings())  # the password stays out of logs and tracebacks


def test_prefects_own_variable_passes_through(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(URL_KEY, FROM_SETTING)
    assert Stack(port=1).env[URL_KEY] == FROM_SETTING


@pytest.mark.parametrize(("limit", "expected"), [(None, None), (1, "1"), (3, "3")])
def test_worker_limit_reaches_the_worker(
    home: Path, monkeypatch: pytest.MonkeyPatch, limit: int | None, expected: str | None
) -> None:
    stack = Stack(port=1, worker_limit=limit)
    started: list[tuple[str, ...]] = []

    class Alive:
        def poll(self) -> None:
            return None

    def spawn(name: str, *args: str, client: bool = True) -> Alive:
        started.append(args)
        return Alive()

    monkeypatch.setattr(stack, "_spawn", spawn)
    monkeypatch.setattr(stack, "online_workers", lambda: [f"{stack._worker_prefix}1"])
    stack.start_worker()
    (args,) = started
    assert args[:2] == ("worker", "start")
    given = args[args.index("--limit") + 1] if "--limit" in args else None
    assert given == expected
