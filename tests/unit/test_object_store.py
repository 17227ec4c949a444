"""Object storage settings and errors without a server (tests/integration/test_object_store.py has one)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from storage.lance import Lance
from storage.object_store import ObjectStoreError, explained, is_remote
from tasks.settings import Settings

# As Lance words a PUT that never reached the server (RuntimeError from LanceDB, OSError from Lance).
UNREACHABLE = (
    "lance error: LanceError(IO): Generic S3 error: Error performing PUT http://127.0.0.1:9/zsr/x in 2s, "
    "after 1 retries - HTTP error: error sending request, /root/.cargo/registry/src/lance-io/writer.rs:627:9"
)


def test_storage_options_come_from_the_s3_settings_for_an_s3_uri_only(tmp_path):
    s3 = Settings(
        home=tmp_path,
        lancedb_uri="s3://bucket/zsr",
        s3_endpoint="http://127.0.0.1:8333",
        s3_access_key_id="key",
        s3_secret_access_key="hunter2",
        s3_allow_http=True,
        s3_retries=3,
        s3_retry_seconds=20,
    )
    assert s3.storage_options == {
        "endpoint": "http://127.0.0.1:8333",
        "aws_access_key_id": "key",
        "aws_secret_access_key": "hunter2",
        "allow_http": "true",
        "client_max_retries": "3",
        "client_retry_timeout": "20",
    }  # no region: unset settings are left to the AWS_* variables
    assert "hunter2" not in repr(s3)
    assert Settings(home=tmp_path, s3_endpoint="http://127.0.0.1:8333").storage_options == {}


def test_the_warehouse_and_test_sets_can_live_apart_from_the_home(tmp_path):
    home = Settings(home=tmp_path)
    assert (home.warehouse_dir, home.testsets_dir) == (tmp_path / "warehouse", tmp_path / "testsets")
    shared = Settings(home=tmp_path, warehouse=tmp_path / "w", testsets=tmp_path / "t")
    assert (shared.warehouse_dir, shared.testsets_dir) == (tmp_path / "w", tmp_path / "t")


def test_an_unreachable_store_is_named_with_its_fix():
    options = {"endpoint": "http://127.0.0.1:9"}
    with pytest.raises(ObjectStoreError) as raised, explained("s3://zsr/home", options):
        raise RuntimeError(UNREACHABLE)
    message = str(raised.value)
    assert "s3://zsr/home (http://127.0.0.1:9)" in message and "run the same command again" in message
    assert "error sending request" in message and ".cargo" not in message  # less the Rust source path
    assert isinstance(raised.value, ConnectionError)  # the CLI shows it as a user error


@pytest.mark.parametrize(
    ("uri", "error"),
    [("/data/lancedb", OSError(UNREACHABLE)), ("s3://zsr/home", ValueError("Table 'c' was not found"))],
)
def test_other_errors_pass_unchanged(uri, error):
    with pytest.raises(type(error)) as raised, explained(uri, {}):
        raise error
    assert raised.value is error


def test_remote_uris():
    assert is_remote("s3://bucket/prefix") and is_remote("gs://bucket")
    assert not is_remote("/data/lancedb") and not is_remote(str(Path("relative/lancedb")))


def test_a_writer_that_loses_the_race_to_create_a_table_opens_it(tmp_path, monkeypatch):
    """Two machines' first ingests both find the registry missing; the second to create it must not fail."""
    schema = pa.schema([("name", pa.string())])
    first, second = Lance(str(tmp_path)), Lance(str(tmp_path))
    monkeypatch.setattr(second, "exists", lambda name: False)  # it looked before the first created it
    first.open_or_create("corpora", schema).add(pa.table({"name": ["c"]}))
    assert second.open_or_create("corpora", schema).to_arrow().to_pylist() == [{"name": "c"}]


def test_the_cli_shows_it_as_one_line_and_exit_2(capsys):
    import typer

    from flows.cli.common import user_errors

    with pytest.raises(typer.Exit) as exited, user_errors():
        raise ObjectStoreError("the object store holding s3://zsr/home failed a request after its retries")
    assert exited.value.exit_code == 2
    assert capsys.readouterr().err.startswith("error: the object store holding s3://zsr/home")
