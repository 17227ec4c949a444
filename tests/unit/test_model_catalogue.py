"""The catalogue of adapted models (storage/models.py): publish, list, resolve."""

from __future__ import annotations

import json

import pytest

from storage.models import MANIFEST, UnknownModelError, catalogue, publish, resolve, work_dir
from tests.fakes import model_manifest as manifest


def staged(tmp_path, version):
    folder = work_dir(tmp_path, "c", version) / "final"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    return folder


def test_published_versions_are_listed_and_resolved_newest_as_latest(tmp_path):
    publish(staged(tmp_path, "mnrl-1"), manifest("mnrl-1", "2026-01-02"), tmp_path)
    path = publish(staged(tmp_path, "mnrl-0"), manifest("mnrl-0", "2026-01-01"), tmp_path)
    (tmp_path / "models" / "onnx" / "export").mkdir(parents=True)  # an ONNX export: not a version

    assert (path / "config.json").exists() and (path / MANIFEST).exists()
    assert [m.version for m in catalogue(tmp_path)] == ["mnrl-0", "mnrl-1"]
    assert resolve(tmp_path, "c", "latest") == tmp_path / "models" / "c" / "mnrl-1"
    assert resolve(tmp_path, "c", "mnrl-0") == path
    assert catalogue(tmp_path, "c")[0] == manifest("mnrl-0", "2026-01-01")


def test_an_unfinished_training_is_no_version(tmp_path):
    staged(tmp_path, "mnrl-2")  # a killed run leaves its work folder only
    publish(staged(tmp_path, "mnrl-1"), manifest("mnrl-1", "2026-01-02"), tmp_path)

    with pytest.raises(UnknownModelError, match="versions: mnrl-1"):
        resolve(tmp_path, "c", "mnrl-2")
    with pytest.raises(UnknownModelError, match="zsr adapt"):
        resolve(tmp_path, "other", "latest")
    with pytest.raises(ValueError, match="not allowed"):
        resolve(tmp_path, "c", "../escape")


def test_zsr_models_lists_versions_and_zsr_adapt_names_what_is_missing(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from flows.cli import app
    from tests.fakes import fake_workspace

    runner = CliRunner()
    with fake_workspace(tmp_path, monkeypatch) as ws:
        assert "no adapted models yet" in runner.invoke(app, ["models"]).output
        publish(
            staged(ws.settings.home_dir, "mnrl-1"), manifest("mnrl-1", "2026-01-02"), ws.settings.home_dir
        )

        listed = runner.invoke(app, ["models", "c", "--json"])
        table = runner.invoke(app, ["models"])
        no_flag = runner.invoke(app, ["adapt", "c"])
        bad_loss = runner.invoke(app, ["adapt", "c", "--from-synthetic", "--loss", "infonce"])

    assert [row["version"] for row in json.loads(listed.output)] == ["mnrl-1"]
    assert "mnrl-1" in table.output and "0.500 -> 0.600" in table.output
    assert no_flag.exit_code == 2 and "--from-synthetic" in no_flag.output
    assert bad_loss.exit_code == 2 and "--loss 'infonce'" in bad_loss.output
