"""hybrid's default fusion is the one the README's "Fusion default" names, and the rule picks as it says.

The README states the default twice (the Search methods table, and the decision under Quality); both are
read from README.md, so changing the default without the README, or the README without it, fails here.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest

from tasks.methods.first_stage import HybridParams
from tasks.methods.registry import parse_method

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_hybrid_default_is_what_the_readme_says() -> None:
    (row,) = [line for line in README.splitlines() if line.startswith("| `hybrid` |")]
    shown = dict(re.findall(r"`(\w+)=([\w.]+)`", row))
    params = parse_method("hybrid").params
    assert isinstance(params, HybridParams)
    assert shown == {
        "fusion": params.fusion,
        "rrf_k": str(params.rrf_k),
        "dense_weight": f"{params.weights[0]:g}",
        "bm25_weight": f"{params.weights[1]:g}",
        "depth": str(params.depth),
    }
    section = README.split("\n### Fusion default\n", 1)[1].split("\n## ", 1)[0]
    (decided,) = re.findall(r"\*\*Decision:\*\*.*?The default is\s+`fusion=(\w+)`", section, re.DOTALL)
    assert decided == params.fusion


@pytest.fixture
def fusion(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(ROOT / "bench"))  # as when run as `python bench/fusion.py`
    spec = importlib.util.spec_from_file_location("fusion_bench", ROOT / "bench" / "fusion.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def figures(fusion: ModuleType, changed: dict[str, tuple[float, float]]) -> dict[tuple[str, str], float]:
    """nDCG@10 0.4 for every setting on both dev collections but ``changed``: setting -> (Cranfield, CISI)."""
    ndcg = {(s, d): 0.4 for s in fusion.SETTINGS for d in fusion.DEV}
    for setting, pair in changed.items():
        ndcg.update({(setting, d): v for d, v in zip(fusion.DEV, pair, strict=True)})
    return ndcg


@pytest.mark.parametrize(
    ("changed", "default"),
    [
        ({}, "rrf k=60"),  # all equal: the incumbent
        ({"score w=0.5": (0.405, 0.405)}, "rrf k=60"),  # +0.005: a tie
        ({"score w=0.5": (0.4051, 0.4051)}, "score w=0.5"),
        ({"score w=0.5": (0.41, 0.41)}, "score w=0.5"),
        ({"score w=0.7": (0.43, 0.42)}, "score w=0.7"),  # both collections pick 0.7
        # Cranfield picks 0.7, CISI 0.3: equal weights stand for score fusion, and tie with RRF.
        ({"score w=0.7": (0.43, 0.40), "score w=0.3": (0.40, 0.43)}, "rrf k=60"),
        ({"score w=0.5": (0.44, 0.39)}, "rrf k=60"),  # mean +0.015, but 0.01 below on CISI
        ({"rrf k=100": (0.42, 0.42), "score w=0.5": (0.43, 0.43)}, "score w=0.5"),  # the best of two
        ({"rrf k=10": (0.42, 0.42)}, "rrf k=10"),
    ],
)
def test_the_rule_picks_as_the_readme_says(
    fusion: ModuleType, changed: dict[str, tuple[float, float]], default: str
) -> None:
    assert fusion.decide(figures(fusion, changed))[0] == default
