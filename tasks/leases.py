"""Leases on corpora and test sets, so that ``zsr rm`` never deletes what a running job reads or writes.

A lease is an ``fcntl.flock`` on ``$ZSR_HOME/locks/<kind>-<name>.lock``: every job that uses a corpus (or
test set) through the Workspace holds it shared for its duration; a delete takes it exclusive without
waiting and refuses when it cannot. The kernel drops a lock when its holder exits, killed or not, so a
crashed job never leaves a corpus locked. Lock files are left in place: deleting one while someone waits on
it would let two holders lock different files. Locks are advisory and local to one machine (a home on a
network file system may not honour them).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path


class InUseError(RuntimeError):
    """A delete found what it should delete in use by a running job."""


def lock_path(locks: Path, kind: str, *names: str) -> Path:
    """The lock file of one corpus (``kind="corpus"``) or test set (``kind="testset"``, corpus and name)."""
    return locks / f"{kind}-{'-'.join(names)}.lock"


@contextmanager
def shared(*paths: Path) -> Iterator[None]:
    """Hold shared leases on ``paths`` for the block (waits only while a delete holds one)."""
    with ExitStack() as stack:
        for path in paths:
            stack.enter_context(_flock(path, fcntl.LOCK_SH))
        yield


@contextmanager
def exclusive(path: Path, what: str) -> Iterator[None]:
    """Hold the exclusive lease on ``path`` for the block, or refuse at once.

    Raises:
        InUseError: a job holds the lease; the message names ``what`` (e.g. ``corpus 'scifact'``).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise InUseError(
            f"{what} is in use by a running job (ingest, search, synthesis or eval); try again when it ends"
        ) from None
    try:
        yield
    finally:
        os.close(fd)


@contextmanager
def _flock(path: Path, operation: int) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, operation)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
