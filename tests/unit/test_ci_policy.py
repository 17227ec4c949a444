"""Under CI a test that skips fails the run (tests/conftest.py): a missing browser, server or model is red."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("ci", "exit_code"), [("true", 1), ("", 0)])
def test_a_skip_fails_only_under_ci(tmp_path: Path, ci: str, exit_code: int) -> None:
    (tmp_path / "test_needs_a_browser.py").write_text(
        "import pytest\n\n\ndef test_ui():\n    pytest.skip('chromium is not installed')\n"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "tests.conftest",
            str(tmp_path),
        ],
        cwd=ROOT,
        env={**os.environ, "CI": ci},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == exit_code, result.stdout + result.stderr
    if ci:
        assert (
            "skipped under CI, which must run every test: Skipped: chromium is not installed" in result.stdout
        )
    else:
        assert "1 skipped" in result.stdout
