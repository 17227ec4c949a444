"""The catalogue of adapted models: ``<home>/models/<corpus>/<version>/``, one folder per fine-tuned model.

A version folder is what ``SentenceTransformer.save`` writes (``SentenceTransformer(path)`` loads it) plus
:data:`MANIFEST`, which says what the model was trained from and what it reached. Training works in
``<home>/models/<corpus>/.work/<version>/`` (checkpoints, the staged model) and :func:`publish` renames the
staged folder into place with its manifest inside, so a version folder is always complete: a killed run
leaves only its work folder, which the next run resumes from. The ONNX exports
(``<home>/models/onnx/``, :mod:`tasks.ingest.onnx`) carry no :data:`MANIFEST`, so they are never listed.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

MANIFEST = "zsr-model.json"  # not the ONNX exports' manifest.json: a folder of either kind is never the other
WORK = ".work"  # per-corpus folder of unfinished trainings (hidden: listing and revision hashes skip it)
LATEST = "latest"  # the version name :func:`resolve` takes for the newest version of a corpus
VERSION_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


class UnknownModelError(LookupError):
    """No adapted model of that corpus and version; the message lists the versions there are."""


@dataclass(frozen=True)
class ModelManifest:
    """What one adapted model was trained from, how, and the dev figures it reached.

    Attributes:
        corpus: The corpus it was adapted to.
        version: Its name under ``<home>/models/<corpus>/`` (content-derived: see ``tasks.adapt``).
        base_model: The model it was fine-tuned from (the corpus's model, as its vector space names it).
        base_revision: That model's revision (:func:`tasks.ingest.embed.model_revision`).
        query_prefix: The prefix queries got in training, as in the corpus's space (keep it when encoding).
        passage_prefix: The prefix passages got in training.
        loss: ``mnrl`` (in-batch and mined hard negatives) or ``listwise`` (graded judge labels).
        data_hash: Hash of the training and dev examples, so two versions trained on the same data show it.
        train_queries: Synthetic queries trained on.
        dev_queries: Synthetic queries held out to measure (never trained on).
        batch_size: Examples per step.
        hard_negatives: Mined hard negatives per query.
        steps: Optimiser steps taken in all (across resumed runs).
        max_steps: The step bound it was run with.
        seconds: Training seconds in all (across resumed runs).
        stopped: Why training ended: ``max-steps`` or ``max-minutes``.
        dev: Dev figures by model: ``{"base": {"nDCG@10": ..}, "adapted": {..}}`` on the held-out queries.
        created_at: UTC time it was published, ISO 8601.
        extra: Anything else worth keeping (e.g. the judge's name); free-form.
    """

    corpus: str
    version: str
    base_model: str
    base_revision: str
    query_prefix: str
    passage_prefix: str
    loss: str
    data_hash: str
    train_queries: int
    dev_queries: int
    batch_size: int
    hard_negatives: int
    steps: int
    max_steps: int
    seconds: float
    stopped: str
    dev: dict[str, dict[str, float]]
    created_at: str
    extra: dict[str, Any] = field(default_factory=dict)

    def as_row(self) -> dict[str, Any]:
        """Every field, JSON-ready."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelManifest:
        """The manifest :meth:`as_row` wrote; fields a newer zsr added are kept in ``extra``."""
        known = {f.name for f in fields(cls)}
        extra = {**data.get("extra", {}), **{k: v for k, v in data.items() if k not in known}}
        return cls(**{**{k: v for k, v in data.items() if k in known}, "extra": extra})


def root(home: Path) -> Path:
    """Where every corpus's models live: ``<home>/models``."""
    return home / "models"


def check_version(version: str) -> str:
    """Validate a version name (it becomes a folder name).

    Raises:
        ValueError: the name has characters other than lower-case letters, digits, ``-`` and ``_``.
    """
    if not VERSION_NAME.match(version):
        raise ValueError(
            f"model version {version!r} is not allowed; use 1-64 lower-case letters, digits, '-' or '_' "
            "(`zsr models` lists the versions there are)"
        )
    return version


def version_dir(home: Path, corpus: str, version: str) -> Path:
    """The folder a published version lives in (it may not exist yet)."""
    return root(home) / corpus / check_version(version)


def work_dir(home: Path, corpus: str, version: str) -> Path:
    """The folder a training of ``version`` checkpoints into until it is published."""
    return root(home) / corpus / WORK / check_version(version)


def read_manifest(folder: Path) -> ModelManifest | None:
    """The manifest of a version folder; ``None`` when it holds none (not a published model)."""
    path = folder / MANIFEST
    if not path.is_file():
        return None
    return ModelManifest.from_dict(json.loads(path.read_text(encoding="utf-8")))


def catalogue(home: Path, corpus: str | None = None) -> list[ModelManifest]:
    """The published versions of ``corpus`` (every corpus: ``None``), oldest first within a corpus."""
    base = root(home)
    corpora = [base / corpus] if corpus is not None else sorted(p for p in base.glob("*") if p.is_dir())
    found = []
    for folder in corpora:
        manifests = (read_manifest(p) for p in folder.glob("*") if p.is_dir() and not p.name.startswith("."))
        found.extend(sorted((m for m in manifests if m is not None), key=lambda m: (m.created_at, m.version)))
    return found


def resolve(home: Path, corpus: str, version: str) -> Path:
    """The folder of a published version, for ``SentenceTransformer(path)``; ``latest``: the newest one.

    Raises:
        UnknownModelError: ``corpus`` has no published version of that name (the message lists them).
    """
    versions = catalogue(home, corpus)
    if version == LATEST and versions:
        return version_dir(home, corpus, versions[-1].version)
    if version != LATEST and read_manifest(version_dir(home, corpus, version)) is not None:
        return version_dir(home, corpus, version)
    known = ", ".join(m.version for m in versions) or "none; `zsr adapt` trains one"
    raise UnknownModelError(f"corpus {corpus!r} has no adapted model {version!r} (versions: {known})")


def publish(staged: Path, manifest: ModelManifest, home: Path) -> Path:
    """Write ``manifest`` into the saved model at ``staged`` and rename it into its version folder.

    The manifest is written last and the folder renamed in one step, so a version folder is complete or
    absent. A version published before is replaced (the same version is the same content-derived name).
    """
    (staged / MANIFEST).write_text(json.dumps(manifest.as_row(), indent=1), encoding="utf-8")
    target = version_dir(home, manifest.corpus, manifest.version)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        shutil.rmtree(target)
    staged.replace(target)
    return target
