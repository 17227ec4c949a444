"""The formats zsr reads, as types: light to import, so the CLI and the flows' UI forms can offer them."""

from __future__ import annotations

from typing import Literal

SourceFormat = Literal["beir", "jsonl", "csv", "parquet", "folder"]
TestSetFormat = Literal["beir", "trec"]
