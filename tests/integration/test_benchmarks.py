"""The quality benchmark as a CI check: every README quality figure is what the code measures today.

``bench/quality.py`` ingests the bundled Cranfield and CISI (bench/data) with the real model, evaluates bm25,
dense and hybrid over every judged query, and exits 1 if a figure drops more than 0.01 below its reference,
differs from the README's Quality table by more than 0.005, or the evaluation overhead passes 10%.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def test_quality_bench_holds_the_references_and_the_readme(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "quality.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    verdicts = [
        line for line in result.stdout.splitlines() if line.startswith(("bm25 ", "dense ", "hybrid "))
    ]
    assert len(verdicts) == 6 and all(line.endswith(" ok") for line in verdicts), result.stdout
