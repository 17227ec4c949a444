"""Issue 12, held: one evaluation sequence, one synthesis configuration, one run record, for every front end.

``tests/unit/test_boundaries.py`` holds the rest: flows/ and bench/ import no storage module.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
from pathlib import Path
from typing import Any, get_args

import pytest
from typer.testing import CliRunner

from tasks.evaluation import runs
from tasks.synthetic.config import Style, SynthesisConfig
from tests.fakes import fake_workspace

ROOT = Path(__file__).resolve().parents[2]
FIELDS = set(SynthesisConfig.model_fields)


def python_files(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


def calls(path: Path, name: str) -> list[int]:
    """Lines of ``path`` that call a function or method named ``name``."""
    return [
        node.lineno
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == name
    ]


def callers(name: str) -> set[str]:
    return {str(p.relative_to(ROOT)) for p in python_files("tasks", "flows", "bench") if calls(p, name)}


# -- one evaluation sequence -----------------------------------------------------------------------------
def test_runs_are_published_and_sequenced_in_one_place():
    """Only the per-method step publishes a run, and only the sequence (or the steps it is given) runs it."""
    assert callers("write_run") == {"tasks/evaluation/runs.py"}
    assert callers("run_method") == {"tasks/evaluation/runs.py", "tasks/workspace.py", "flows/steps.py"}
    assert callers("previous_runs") == {"tasks/evaluation/runs.py", "tasks/workspace.py", "flows/steps.py"}
    assert callers("plan") == {"tasks/evaluation/runs.py"}  # the sequence plans; nobody else
    # The flow runs the sequence with its steps as tasks.
    flow = ast.parse((ROOT / "flows" / "evaluate.py").read_text())
    (call,) = [
        n for n in ast.walk(flow) if isinstance(n, ast.Call) and ast.unparse(n.func) == "runs.evaluate"
    ]
    assert ast.unparse(call.args[0]) == "steps.ORCHESTRATED"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A ZSR_HOME with corpus ``c`` (fake embedder) and its test set ``t``; yields the workspace."""
    with fake_workspace(tmp_path, monkeypatch) as ws:
        yield ws


def test_zsr_eval_and_the_benches_direct_path_run_the_one_sequence(home, monkeypatch):
    """``zsr eval`` and bench/orchestration.py's direct side run ``runs.evaluate`` (the flow: tests/flows)."""
    from flows.cli import app

    seen: list[tuple[str, bool, bool]] = []
    sequence = runs.evaluate

    def spy(steps: Any, *args: Any, **options: Any) -> runs.Evaluation:
        seen.append((type(steps).__name__, options.get("compare", False), options.get("report", False)))
        return sequence(steps, *args, **options)

    monkeypatch.setattr(runs, "evaluate", spy)
    result = CliRunner().invoke(app, ["eval", "-c", "c", "-t", "t", "--methods", "bm25", "--json"])
    assert result.exit_code == 0, result.output
    spec = importlib.util.spec_from_file_location("orchestration_bench", ROOT / "bench" / "orchestration.py")
    assert spec and spec.loader
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.direct("c", "t", ["bm25", "dense"])
    assert seen == [("Direct", False, False), ("Direct", True, True)]  # the bench: like the flow
    published = home.sql("SELECT eval_id, count(*) AS n FROM runs GROUP BY eval_id ORDER BY min(created_at)")
    assert [r["n"] for r in published.to_dicts()] == [1, 2]
    assert "-direct-" in published.to_dicts()[1]["eval_id"]


# -- one synthesis configuration -------------------------------------------------------------------------
def test_the_flows_take_one_synthesis_config_and_their_form_is_its_schema():
    from prefect.utilities.callables import parameter_schema

    from flows.nightly import nightly
    from flows.synthesize import synthesize

    model = SynthesisConfig.model_json_schema()
    for flow in (synthesize, nightly):
        schema = parameter_schema(flow).model_dump()
        assert not FIELDS & set(schema["properties"]), flow.name  # no field of the config of its own
        assert schema["properties"]["synthesis"]["$ref"] == "#/definitions/SynthesisConfig"
        assert schema["definitions"]["SynthesisConfig"]["properties"] == model["properties"]
    assert list(parameter_schema(synthesize).model_dump()["properties"]) == ["corpus", "synthesis"]


def test_synthesis_parameters_are_declared_once():
    """No function of a front end or the workspace lists the config's fields, except the CLI's options.

    The CLI's options are the config's fields under their flag names, with the model's defaults.
    """
    listed = {
        f"{path.relative_to(ROOT)}:{node.name}"
        for path in [*python_files("flows", "bench"), ROOT / "tasks" / "workspace.py"]
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and len(FIELDS & {a.arg for a in [*node.args.args, *node.args.kwonlyargs]}) >= 2
    }
    assert listed == {"flows/cli/synthesis.py:synthesize", "flows/cli/testsets.py:testset_synthesize"}

    from flows.cli.synthesis import synthesize
    from flows.cli.testsets import testset_synthesize

    defaults = SynthesisConfig()
    for command, renamed in ((synthesize, {"docs": "sample_docs"}), (testset_synthesize, {})):
        options = {renamed.get(n, n): p.default for n, p in inspect.signature(command).parameters.items()}
        shared = FIELDS & set(options)
        assert {f: options[f] for f in shared} == {f: getattr(defaults, f) for f in shared}, command
    options = set(inspect.signature(synthesize).parameters) - {"corpus", "as_json"}
    assert {"sample_docs" if o == "docs" else o for o in options} == FIELDS  # every field, nothing else


def test_the_config_styles_are_the_prompt_styles_and_errors_are_one_line():
    from tasks.synthetic.generators import PROMPTS

    assert set(get_args(Style)) == set(PROMPTS)
    with pytest.raises(ValueError, match=r"^unknown generator 'gpt'; use 'llm' or 'extractive'$"):
        SynthesisConfig.of(generator="gpt")
    with pytest.raises(ValueError, match=r"^per_doc: Input should be greater than or equal to 1 \(got 0\)$"):
        SynthesisConfig.of(per_doc=0)
    with pytest.raises(ValueError, match="unknown method 'splade'"):
        SynthesisConfig.of(roundtrip_method="splade")
