"""The quality benchmark as a CI check: every README quality figure is what the code measures today.

``bench/quality.py`` ingests the bundled Cranfield, CISI and LIMIT-small (bench/data) with the real model,
evaluates bm25, dense, hybrid and whitened dense over every judged query, and exits 1 if a figure drops
more than 0.01 below its reference, differs from the README's Quality tables by more than 0.005, or the
evaluation overhead passes 10%.
``bench/fusion.py`` (the fusion default's evidence: minutes of full-collection work) runs here on small
slices, its plumbing end to end, not its figures.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.flows.conftest import write_slice

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
    assert len(verdicts) == 9 and all(line.endswith(" ok") for line in verdicts), result.stdout


def test_fusion_bench_tabulates_every_setting_and_decides(tmp_path: Path) -> None:
    # Two slices of the demo stand in for the dev collections; LIMIT-small (46 documents) is bundled whole.
    write_slice(tmp_path / "cranfield", queries=3, extra_docs=10)
    write_slice(tmp_path / "cisi", queries=3, extra_docs=10, skip_docs=5)
    (tmp_path / "limit-small").symlink_to(ROOT / "bench" / "data" / "limit-small")
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "fusion.py"), "--data", str(tmp_path), "--queries", "3"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    table = lines[lines.index("") + 1 :]
    assert table[0].split()[:2] == ["setting", "cranfield"] and "limit-small" in table[0]
    rows = [line for line in table[1:] if re.match(r"(bm25|dense|rrf k=\d+|score w=[\d.]+) +\d", line)]
    assert len(rows) == 8 and all(len(re.findall(r"\d\.\d{3} / \d\.\d{3}", r)) == 3 for r in rows), table
    assert re.fullmatch(r"decision: (rrf k=\d+|score w=[\d.]+) \(hybrid\(.*\)\)", lines[-1]), lines[-1]
