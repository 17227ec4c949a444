"""ONNX Runtime embedders: the sentence-transformers pipeline exported once, run on the CPU without torch.

Everything after tokenisation (the transformer, the model's own pooling module, its normalisation) is traced
from the loaded sentence-transformers model into one graph, so the pooling is the model's and not a copy of
it; the tokenizer is saved beside the graph as that model configured it (its window, its lower-casing).
``onnx-int8`` quantises the float32 graph's weights with ``quantize_dynamic``, per channel: per tensor, the
int8 vectors of Cranfield chunks fell to cosine 0.89 against the torch ones, per channel they stay >= 0.99.

An export lives in ``<models_dir>/onnx/<model>-<revision>[-int8]/``. It is written into a temporary folder
beside it and renamed into place, with a manifest of every file's SHA-256 written last, so a folder that is
half-written, truncated or altered is found out and exported again, never loaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import tempfile
import warnings
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from storage.vector_space import VectorSpace
from tasks.ingest.embed import (
    SENTENCE_TRANSFORMERS,
    SentenceTransformerEmbedder,
    check_revision,
    token_spans,
)

log = logging.getLogger(__name__)

QUANTISED = {"onnx": False, "onnx-int8": True}  # the ONNX backends, and whether their weights are int8
GRAPH = "model.onnx"
MANIFEST = "manifest.json"
OUTPUT = "sentence_embedding"


def export_folder(space: VectorSpace, models_dir: Path) -> Path:
    """Where the export of ``space``'s model for its backend lives (one per model revision)."""
    slug = re.sub(r"[^\w.-]+", "--", space.model.strip("/"))  # hub names and local paths hold slashes
    return models_dir / "onnx" / f"{slug}-{space.revision}{'-int8' if QUANTISED[space.backend] else ''}"


def ensure_export(space: VectorSpace, models_dir: Path) -> dict[str, Any]:
    """The manifest of ``space``'s export, made first if none is sound (int8: from the float32 export).

    Raises:
        ModelMismatchError: the model as installed is not ``space``'s revision.
        ValueError: ``space.backend`` is no ONNX backend this zsr knows.
    """
    if space.backend not in QUANTISED:
        raise ValueError(
            f"vector space backend {space.backend!r} is not one this zsr runs "
            f"(sentence-transformers, {', '.join(QUANTISED)}); a newer zsr indexed it: upgrade zsr"
        )
    check_revision(space)  # before trusting an export named by the revision
    folder = export_folder(space, models_dir)
    manifest = read_manifest(folder)
    if manifest is not None:
        return manifest
    if folder.exists():
        log.warning("ONNX export %s is incomplete or corrupt; exporting it again", folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        if QUANTISED[space.backend]:
            float32 = replace(space, backend="onnx")
            facts = _quantise(ensure_export(float32, models_dir), export_folder(float32, models_dir), staged)
        else:
            facts = _export_float32(space, staged)
        files = {p.name: _sha256(p) for p in sorted(staged.iterdir()) if p.is_file()}
        manifest = {**facts, "model": space.model, "revision": space.revision, "files": files}
        (staged / MANIFEST).write_text(json.dumps(manifest, indent=1))
        staged.chmod(0o755)  # mkdtemp made it private; an export is as readable as the rest of the home
        if folder.exists():
            shutil.rmtree(folder)  # found unsound above
        try:
            staged.rename(folder)
        except OSError:  # another process put its export there meanwhile: that one is used if sound
            manifest = read_manifest(folder)
            if manifest is None:
                raise
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    log.info("exported %s for %s into %s", space.backend, space.model, folder)
    return manifest


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The export's manifest when every file it lists is there with its recorded hash; else ``None``."""
    try:
        manifest: dict[str, Any] = json.loads((folder / MANIFEST).read_text())
        sound = all(_sha256(folder / name) == digest for name, digest in manifest["files"].items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return manifest if sound and GRAPH in manifest["files"] else None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _export_float32(space: VectorSpace, folder: Path) -> dict[str, Any]:
    """Trace the loaded sentence-transformers pipeline of ``space`` into ``folder``, with its tokenizer."""
    import torch

    embedder = SentenceTransformerEmbedder(replace(space, backend=SENTENCE_TRANSFORMERS), device="cpu")
    model, tokenizer = embedder.model, embedder.model.tokenizer
    tokenizer.save_pretrained(folder)
    sample = tokenizer(["a sample", "a longer sample text"], padding=True, return_tensors="pt")
    names = list(sample.keys())

    class Pipeline(torch.nn.Module):
        """The model's modules from token ids to the sentence embedding, positional inputs as ONNX has."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            return self.model(dict(zip(names, inputs, strict=True)))[OUTPUT]

    axes = {name: {0: "batch", 1: "tokens"} for name in names}
    # The TorchScript exporter needs no onnxscript (the dynamo one does). Its tracer warns of Python values
    # taken from tensors; for these models they are the same for every input (the mask spans the sequence),
    # and the tests hold the graph's vectors to the torch ones.
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Pipeline().eval(),
            tuple(sample[name] for name in names),
            str(folder / GRAPH),
            input_names=names,
            output_names=[OUTPUT],
            dynamic_axes={**axes, OUTPUT: {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    return {"dim": embedder.dim, "max_seq_length": embedder.max_tokens + 2, "inputs": names}


def _quantise(source: dict[str, Any], float32: Path, folder: Path) -> dict[str, Any]:
    """Dynamic int8 weights, per channel, of the float32 export in ``float32`` (``source``: its manifest)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    for name in source["files"]:
        if name != GRAPH:
            shutil.copy2(float32 / name, folder / name)
    quantize_dynamic(float32 / GRAPH, folder / GRAPH, per_channel=True, weight_type=QuantType.QInt8)
    return {key: source[key] for key in ("dim", "max_seq_length", "inputs")}


class OnnxEmbedder:
    """The model of a space run by ONNX Runtime on the CPU, its export made on first use and reused after."""

    def __init__(self, space: VectorSpace, models_dir: Path, batch_size: int = 32) -> None:
        """Load (exporting first if need be) the ONNX graph of ``space``'s model for its backend.

        Raises:
            ModelMismatchError: the model as installed is not ``space``'s revision.
            ValueError: ``space.backend`` is no ONNX backend this zsr knows.
        """
        import onnxruntime
        from transformers import AutoTokenizer

        manifest = ensure_export(space, models_dir)
        folder = export_folder(space, models_dir)
        self.space = space
        self.batch_size = batch_size
        self.dim = int(manifest["dim"])
        self.window = int(manifest["max_seq_length"])
        self.max_tokens = self.window - 2  # as SentenceTransformerEmbedder: two special tokens
        self._inputs: list[str] = manifest["inputs"]
        self._tokenizer = AutoTokenizer.from_pretrained(folder)
        self._session = onnxruntime.InferenceSession(folder / GRAPH, providers=["CPUExecutionProvider"])

    def token_offsets(self, texts: list[str]) -> list[list[tuple[int, int]]]:
        """Character spans from the fast tokenizer's offset mapping (the one the model was saved with)."""
        return token_spans(self._tokenizer, texts)

    def encode(self, texts: list[str], *, queries: bool) -> np.ndarray:
        """Encode as sentence-transformers does: prefixed, longest first in batches, cut to the window."""
        prefix = self.space.prefix("query" if queries else "passage")
        prefixed = [prefix + t for t in texts]
        order = np.argsort([-len(t) for t in prefixed], kind="stable")  # batches of alike lengths pad less
        out = np.empty((len(texts), self.dim), np.float32)
        for start in range(0, len(texts), self.batch_size):
            rows = order[start : start + self.batch_size]
            batch = self._tokenizer(
                [prefixed[i] for i in rows],
                padding=True,
                truncation="longest_first",
                max_length=self.window,
                return_tensors="np",
            )
            feeds = {name: batch[name].astype(np.int64) for name in self._inputs}
            out[rows] = self._session.run([OUTPUT], feeds)[0]
        # A model without a Normalize module is normalised here, as normalize_embeddings=True does.
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


@lru_cache(maxsize=4)
def load_onnx_embedder(space: VectorSpace, models_dir: Path, batch_size: int = 32) -> OnnxEmbedder:
    """One loaded graph per (space, models folder, batch size) per process, as ``load_embedder`` keeps."""
    return OnnxEmbedder(space, models_dir, batch_size=batch_size)
