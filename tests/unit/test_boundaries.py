"""The layering rules: ``tasks`` and ``storage`` never import Prefect (flows -> tasks -> storage), and the
front ends (``flows``, ``bench``) come through the Workspace, never to storage."""

from __future__ import annotations

import ast
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


FRONT_ENDS = ("flows", "bench")
# Storage handles and storage locations: the Workspace holds them, front ends ask it instead.
STORAGE_ATTRIBUTES = {
    "store",
    "warehouse",
    "db",
    "warehouse_dir",
    "testsets_dir",
    "lancedb",
    "llm_cache_path",
}


# Benchmarks of storage components themselves open storage: LanceDB's index types side by side
# (bench/ann.py), the in-memory exact search against NumPy over a corpus of jittered copies that it writes
# into its own temporary home (bench/speed.py, section 3). Every other bench measures zsr through its door.
STORAGE_BENCHES = {ROOT / "bench" / "ann.py", ROOT / "bench" / "speed.py"}


def front_end_files() -> list[Path]:
    files = sorted(
        p for package in FRONT_ENDS for p in (ROOT / package).rglob("*.py") if p not in STORAGE_BENCHES
    )
    assert ROOT / "flows" / "cli" / "corpus.py" in files and ROOT / "bench" / "quality.py" in files
    return files


def imported(tree: ast.AST) -> list[tuple[int, str]]:
    """``(line, module)`` of every import, at any level of the file (functions included)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        elif (  # importlib.import_module("storage...") and __import__("storage...")
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value))
    return found


def test_flows_and_bench_import_no_storage_module():
    """Front ends hold a Workspace; no module under flows/ or bench/ imports ``storage``, at any level."""
    offending = [
        f"{path.relative_to(ROOT)}:{line}: {module}"
        for path in front_end_files()
        for line, module in imported(ast.parse(path.read_text(), str(path)))
        if module == "storage" or module.startswith("storage.")
    ]
    assert offending == []


def test_flows_and_bench_reach_no_storage_handle():
    """Nor do they reach a store or a warehouse through an object (``engine.store``, ``ws.warehouse``)."""
    offending = [
        f"{path.relative_to(ROOT)}:{node.lineno}: .{node.attr}"
        for path in front_end_files()
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, ast.Attribute) and node.attr in STORAGE_ATTRIBUTES
    ]
    assert offending == []
