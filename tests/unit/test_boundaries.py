"""The layering rule: ``tasks`` and ``storage`` never import Prefect (flows -> tasks -> storage)."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_tasks_and_storage_do_not_import_prefect():
    modules = [
        m.name
        for package in ("tasks", "storage")
        for m in pkgutil.walk_packages([str(ROOT / package)], prefix=f"{package}.")
    ]
    assert "tasks.ingest.index" in modules and "storage.corpus_store" in modules
    code = "import importlib, sys\n" + "".join(f"importlib.import_module({m!r})\n" for m in modules)
    code += "print(sorted(m for m in sys.modules if m == 'prefect' or m.startswith('prefect.')))"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_storage_does_not_import_tasks_or_flows():
    for path in (ROOT / "storage").rglob("*.py"):
        text = path.read_text()
        assert "from tasks" not in text and "import tasks" not in text, path
        assert "from flows" not in text and "import flows" not in text, path
