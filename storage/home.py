"""The on-disk format of a zsr home (LanceDB tables, warehouse, test sets): its version, and migrating to it.

A home written by an older zsr is migrated (``zsr migrate``, which calls :func:`migrate`) or refused with the
command that migrates it; it is never read as if it were current. ``<home>/format.json`` records the version;
with the LanceDB on object storage, ``<LanceDB URI>/format.json`` does, where every machine using it reads it.

Versions:

1. (no record) The registry row of a corpus names its model and prefixes; one views table per corpus,
   ``<corpus>__views``; one embedding cache table per model and prefix, ``embedcache__<hash(model, prefix)>``.
2. Vector spaces (:mod:`storage.vector_space`): the registry row holds the corpus's active space; views live
   in ``<corpus>__views__<space key>``, cached vectors in ``embedcache__<space key>__<role>``. The warehouse
   and test sets are as in format 1; runs written before format 2 carry no space key.
3. Typed metadata (:mod:`storage.metadata`): documents, views and expanded tables carry a ``meta__<key>``
   column per filterable metadata key (for ``zsr search --where``), beside the ``metadata`` JSON column.

A change to any schema bumps :data:`FORMAT_VERSION`, adds its step to :mod:`storage.migrations` and to
:func:`migrate`, and a test that migrates a home built by the previous version.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from storage.lance import Lance
from storage.migrations import Progress, SpaceOf, v1_layout, v1_to_v2, v2_to_v3
from storage.object_store import is_remote, read_object, write_object

log = logging.getLogger(__name__)

FORMAT_VERSION = 3
RECORD = "format.json"


@dataclass(frozen=True, slots=True)
class Home:
    """Where one home's parts are (storage reads no settings: the caller resolves them)."""

    root: Path  # holds the format record
    lancedb: str  # any LanceDB URI
    warehouse: Path
    testsets: Path
    storage_options: dict[str, str] = field(default_factory=dict)  # of an object store (storage.object_store)

    def lance(self) -> Lance:
        """A connection to the home's LanceDB."""
        return Lance(self.lancedb, self.storage_options)

    @property
    def record(self) -> str:
        """Where the format record is: beside a LanceDB on object storage, else in the home folder."""
        return f"{self.lancedb.rstrip('/')}/{RECORD}" if is_remote(self.lancedb) else str(self.root / RECORD)


@dataclass
class MigrationReport:
    """What :func:`migrate` did: the format it found, the one it left, and each action in order."""

    found: int | None  # None: a new home, or one this zsr wrote before recording its format
    format: int = FORMAT_VERSION
    actions: list[str] = field(default_factory=list)


class HomeFormatError(ValueError):
    """The home was written in another format than this zsr reads; the message names the fix."""


def recorded_format(home: Home) -> int | None:
    """The version ``format.json`` records; ``None`` where there is no record (format 1 kept none)."""
    if is_remote(home.lancedb):
        data = read_object(home.record, home.storage_options)
    else:
        path = Path(home.record)
        data = path.read_bytes() if path.exists() else None
    return None if data is None else int(json.loads(data)["format"])


def check_format(home: Home) -> None:
    """Refuse a home of another format, before anything reads or writes it; record the format of a new one.

    A home without a record is format 1 when its tables have format 1's layout; otherwise it is new (or was
    written by this zsr before it first checked), and the current version is recorded. Refusing writes
    nothing.

    Raises:
        HomeFormatError: an older zsr wrote the home (``zsr migrate`` upgrades it), or a newer one did.
    """
    found = recorded_format(home)
    if found is None and v1_layout(home.lance()):
        found = 1
    if found is None:
        _record(home)
    elif found < FORMAT_VERSION:
        raise HomeFormatError(
            f"{_name(home)} was written by zsr format {found}; this zsr reads format "
            f"{FORMAT_VERSION}. Run `zsr migrate` to upgrade it (a backup first: "
            f"`cp -a {home.root} {home.root}.format{found}`{_remote_note(home)})"
        )
    elif found > FORMAT_VERSION:
        raise HomeFormatError(_newer(home, found))


def migrate(home: Home, *, space_of: SpaceOf, progress: Progress | None = None) -> MigrationReport:
    """Upgrade ``home`` to :data:`FORMAT_VERSION` in place; a home already current is left untouched.

    Safe to kill and run again at any point (each step works out what is left from what is on disk); run it
    while nothing else uses the home.

    Args:
        home: The home's paths.
        space_of: The vector space of a format-1 corpus from its model and prefixes, as installed now
            (format 1 recorded no model revision).
        progress: Told each action once it is done.

    Raises:
        HomeFormatError: a newer zsr wrote the home.
    """
    recorded = recorded_format(home)
    if recorded is not None and recorded > FORMAT_VERSION:
        raise HomeFormatError(_newer(home, recorded))
    lance = home.lance()
    found = 1 if v1_layout(lance) else recorded
    report = MigrationReport(found)
    if found == FORMAT_VERSION:
        return report
    if found == 1:
        report.actions += v1_to_v2(lance, space_of, progress)
    if found in (1, 2):
        report.actions += v2_to_v3(lance, progress)
    _record(home)
    log.info("home %s is at format %d: %s", home.root, FORMAT_VERSION, report)
    return report


def _record(home: Home) -> None:
    """Write the current format to ``format.json`` atomically (a rename; on object storage, one PUT)."""
    if is_remote(home.lancedb):
        write_object(home.record, home.storage_options, json.dumps({"format": FORMAT_VERSION}).encode())
        return
    home.root.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=home.root, prefix=".format-", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump({"format": FORMAT_VERSION}, out)
        out.flush()
        os.fsync(out.fileno())
    Path(name).replace(home.root / RECORD)


def _remote_note(home: Home) -> str:
    """The backup hint's word on a LanceDB outside the home folder, which ``cp`` of the home misses."""
    inside = not is_remote(home.lancedb) and Path(home.lancedb).resolve().is_relative_to(home.root.resolve())
    return "" if inside else f", and of the LanceDB at {home.lancedb}"


def _name(home: Home) -> str:
    """The home as messages name it: the store holding its record (on object storage), or its folder."""
    return f"the zsr store {home.lancedb}" if is_remote(home.lancedb) else f"the zsr home {home.root}"


def _newer(home: Home, found: int) -> str:
    return (
        f"{_name(home)} was written by zsr format {found}, newer than the format {FORMAT_VERSION} "
        "this zsr reads; upgrade zsr to use it"
    )
