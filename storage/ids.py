"""Content-derived ids: the same content always gets the same id, so reruns upsert and caches hit."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any
from urllib.parse import quote, unquote

_SEP = "\x1f"  # unit separator: cannot occur in normalised text, so ("a", "bc") and ("ab", "c") differ


def content_hash(*parts: str) -> str:
    """A 32-hex-digit SHA-256 digest of ``parts``."""
    return hashlib.sha256(_SEP.join(parts).encode("utf-8")).hexdigest()[:32]


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace, so equal values hash equally."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


_TREC_UNSAFE = re.compile(r"[\s%]")


def trec_id(value: str) -> str:
    """An id as one TREC field: whitespace and ``%`` percent-encoded (UTF-8), everything else as is.

    TREC run and qrels lines are split on whitespace, so an id such as a person's name would shift every
    later column; :func:`untrec_id` reverses this, and plain ids are unchanged.
    """
    return _TREC_UNSAFE.sub(lambda m: quote(m.group(), safe=""), value)


def untrec_id(field: str) -> str:
    """The id a TREC field written by :func:`trec_id` holds."""
    return unquote(field) if "%" in field else field
