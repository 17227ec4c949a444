"""The identity of a vector space: everything that decides which vector a text gets.

Two vectors are comparable only when they come from the same space, so one key names a space everywhere: the
embedding cache (``embedcache__<key>__<role>``), a corpus's views table (``<corpus>__views__<key>``), the
registry row of the corpus (its active space) and run provenance. A corpus may hold the tables of several
spaces; searching uses the one its registry row names.

A new dimension (a seed, an adaptation, ...) is a new field with a *neutral* default: fields at their default
are left out of the key, so adding one keeps every existing key, table and cache valid. A default therefore
never changes once released; a change of meaning is a new field instead.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

import pyarrow as pa

from storage.ids import canonical_json, content_hash

Role = Literal["query", "passage"]
ROLES: tuple[Role, ...] = ("query", "passage")
SPACE_METADATA = b"zsr.vector_space"  # schema metadata key of views and cache tables: the space's JSON


@dataclass(frozen=True, slots=True)
class VectorSpace:
    """A model at one revision, run one way: texts embedded in the same space are comparable.

    Attributes:
        model: The model name or path, as configured.
        revision: The model's version (:func:`tasks.ingest.embed.model_revision`): new weights, new space.
        backend: The encoder library that runs the model.
        query_prefix: Text put before every query.
        passage_prefix: Text put before every passage (chunks and titles).
        chunking: How a chunk's vector is computed: ``tokens`` encodes each chunk's text on its own, so a
            chunk's vector depends on its text alone and the cache can key it by that text.
        quantization: How stored vectors are quantised; ``None``: float32 as the encoder returns them.
        transforms: Transforms applied after encoding, in order (whitening, a drift map, ...).
    """

    model: str
    revision: str
    backend: str = "sentence-transformers"
    query_prefix: str = ""
    passage_prefix: str = ""
    chunking: str = "tokens"
    quantization: str | None = None
    transforms: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """16 hex digits naming the space in table names and provenance (fields at default left out)."""
        defaults = {f.name: f.default for f in fields(self)}
        keyed = {name: value for name, value in self.as_dict().items() if value != defaults[name]}
        return content_hash(canonical_json(keyed))[:16]

    def prefix(self, role: Role) -> str:
        """The prefix a text of ``role`` gets."""
        return self.query_prefix if role == "query" else self.passage_prefix

    def as_dict(self) -> dict[str, Any]:
        """Every field, JSON-ready (``transforms`` as a list)."""
        out = asdict(self)
        out["transforms"] = list(self.transforms)
        return out

    def to_json(self) -> str:
        """Canonical JSON of every field, as the registry and table metadata store it."""
        return canonical_json(self.as_dict())

    @classmethod
    def from_json(cls, text: str) -> VectorSpace:
        """The space :meth:`to_json` wrote; a field this zsr does not know is an error, never dropped.

        Raises:
            ValueError: the JSON names a dimension this version of zsr does not know (a newer zsr wrote it).
        """
        data = json.loads(text)
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(
                f"vector space {text} has dimensions this zsr does not know ({', '.join(unknown)}): "
                "it was written by a newer zsr; upgrade zsr"
            )
        return cls(**{**data, "transforms": tuple(data.get("transforms", ()))})


def with_space(schema: pa.Schema, space: VectorSpace) -> pa.Schema:
    """``schema`` carrying ``space`` in its metadata, so a table created with it says which space it holds."""
    return schema.with_metadata({**(schema.metadata or {}), SPACE_METADATA: space.to_json().encode()})


def space_of(schema: pa.Schema) -> VectorSpace | None:
    """The space a table's schema records (:func:`with_space`); ``None`` when it records none."""
    text = (schema.metadata or {}).get(SPACE_METADATA)
    return VectorSpace.from_json(text.decode()) if text is not None else None
