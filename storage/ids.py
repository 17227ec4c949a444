"""Content-derived ids: the same content always gets the same id, so reruns upsert and caches hit."""

from __future__ import annotations

import hashlib
import json
from typing import Any

_SEP = "\x1f"  # unit separator: cannot occur in normalised text, so ("a", "bc") and ("ab", "c") differ


def content_hash(*parts: str) -> str:
    """A 32-hex-digit SHA-256 digest of ``parts``."""
    return hashlib.sha256(_SEP.join(parts).encode("utf-8")).hexdigest()[:32]


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace, so equal values hash equally."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
