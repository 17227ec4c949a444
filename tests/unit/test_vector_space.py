"""The vector space key: every dimension counts, a new one at its neutral default changes no key, and the
key of today's spaces never moves (table names carry it, so a moved key would orphan every home's tables)."""

from __future__ import annotations

import dataclasses

import pyarrow as pa
import pytest

from storage.vector_space import VectorSpace, space_of, with_space

MINILM = VectorSpace("all-MiniLM-L6-v2", "ffda3589f429458c")  # the bundled model as of home format 2


def test_the_key_of_a_space_never_moves():
    assert MINILM.key == "ebcf0a720c14614f"  # the key tests/fixtures/home-v1.tar.gz migrates to


@pytest.mark.parametrize(
    "change",
    [
        {"model": "other"},
        {"revision": "r2"},
        {"backend": "onnx"},
        {"query_prefix": "query: "},
        {"passage_prefix": "passage: "},
        {"chunking": "late"},
        {"quantization": "int8"},
        {"transforms": ("whiten",)},
    ],
    ids=lambda change: next(iter(change)),
)
def test_every_dimension_is_part_of_the_key(change):
    assert dataclasses.replace(MINILM, **change).key != MINILM.key


def test_a_new_dimension_at_its_neutral_default_keeps_every_key():
    @dataclasses.dataclass(frozen=True, slots=True)
    class Later(VectorSpace):
        seed: int | None = None

    assert Later(MINILM.model, MINILM.revision).key == MINILM.key
    assert Later(MINILM.model, MINILM.revision, seed=3).key != MINILM.key


def test_json_round_trip_and_a_dimension_this_zsr_does_not_know():
    space = dataclasses.replace(MINILM, query_prefix="q: ", transforms=("whiten", "drift"))
    assert VectorSpace.from_json(space.to_json()) == space
    assert VectorSpace.from_json('{"model": "m", "revision": "r"}') == VectorSpace("m", "r")  # older JSON
    with pytest.raises(ValueError, match="newer zsr"):
        VectorSpace.from_json('{"model": "m", "revision": "r", "seed": 1}')


def test_a_table_schema_records_its_space():
    schema = pa.schema([("a", pa.int32())], metadata={"other": "kept"})
    assert space_of(with_space(schema, MINILM)) == MINILM
    assert with_space(schema, MINILM).metadata[b"other"] == b"kept"
    assert space_of(schema) is None
