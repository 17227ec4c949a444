"""LanceDB on object storage (``s3://bucket/prefix``): what differs from a local folder, decided in one place.

Every LanceDB table zsr keeps (registry, documents, views, embedding caches, synthetic queries, whitening
fits) goes through :class:`storage.lance.Lance`, which passes the storage options given here to LanceDB and
Lance, so one URI and one set of options reach every table.

Commits: Lance writes a table's next manifest with a conditional PUT (``If-None-Match: *``) on S3 and
retries the transaction on conflict, so concurrent writers on any machine never lose a commit, given a
server that honours the header atomically (AWS S3, and SeaweedFS 4.48, which ``tests/s3_server.py``
starts; ``tests/integration/test_object_store.py`` checks both). No commit lock or external manifest store
is needed.

What relies on a local file system, and what it does on object storage:

- leases (:mod:`tasks.leases`) are ``flock`` files under ``$ZSR_HOME/locks``: they keep ``zsr rm`` and
  ``zsr gc`` from deleting what a job on the same machine uses, but do not see jobs on other machines;
- so upkeep (:mod:`storage.upkeep`) on object storage never deletes files no version references
  (``delete_unverified``): they may belong to a commit another machine is making; Lance's own age rule
  (7 days) lets them go later;
- the home's format record (``format.json``) goes beside the tables (``<uri>/format.json``, one PUT, so
  readers see the old record or the new), where every machine reads it (:func:`read_object`); the LLM
  response cache (SQLite) stays in ``$ZSR_HOME``;
- table sizes are not summed (``bytes`` is ``None``), since that would list every object.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import pyarrow.fs as pafs

# The words Lance's S3 client (and pyarrow's, for the format record) put in errors of a request that did not
# get through.
_UNREACHABLE = ("S3 error", "error sending request", "Connection refused", "NETWORK_CONNECTION")


class ObjectStoreError(ConnectionError):
    """The object store did not answer; the message names the URI, the endpoint and what to do."""


def is_remote(uri: str) -> bool:
    """Whether a LanceDB URI is on object storage (``s3://``, ``gs://``, ...) rather than a local path."""
    return "://" in uri


@contextmanager
def explained(uri: str, options: Mapping[str, str]) -> Iterator[None]:
    """Re-raise an object store's unreachable errors in the block as :class:`ObjectStoreError`.

    Lance reports them as ``OSError``, ``RuntimeError`` or ``ValueError`` with the S3 client's text;
    anything else passes unchanged.

    Raises:
        ObjectStoreError: a request to the store at ``uri`` failed after its retries.
    """
    try:
        yield
    except (OSError, RuntimeError, ValueError) as error:
        if not is_remote(uri) or not any(word in str(error) for word in _UNREACHABLE):
            raise
        endpoint = options.get("endpoint", "the default AWS endpoint")
        raise ObjectStoreError(
            f"the object store holding {uri} ({endpoint}) failed a request after its retries "
            f"(ZSR_S3_RETRIES, ZSR_S3_RETRY_SECONDS): {_first_line(error)}. Check that the server is up and "
            "ZSR_S3_* name it, then run the same command again: every commit is atomic and ingest resumes "
            "where it stopped"
        ) from error


def _first_line(error: BaseException) -> str:
    """The error's text up to its first source location (Lance appends Rust file paths)."""
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return text.split(", /")[0]


def read_object(uri: str, options: Mapping[str, str]) -> bytes | None:
    """The object at ``uri`` (``s3://bucket/key``); ``None`` where there is none."""
    fs, path = _filesystem(uri, options)
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return None
    with fs.open_input_stream(path) as stream:
        return bytes(stream.read())


def write_object(uri: str, options: Mapping[str, str], data: bytes) -> None:
    """Write the object at ``uri`` whole in one PUT: a reader gets the old object or the new, never part."""
    fs, path = _filesystem(uri, options)
    with fs.open_output_stream(path) as out:
        out.write(data)


def _filesystem(uri: str, options: Mapping[str, str]) -> tuple[pafs.FileSystem, str]:
    """The pyarrow file system of ``uri``, with Lance's storage options translated for ``s3://``."""
    if not uri.startswith("s3://"):
        return pafs.FileSystem.from_uri(uri)
    endpoint = options.get("endpoint")
    scheme, _, host = endpoint.partition("://") if endpoint else ("https", "", "")
    fs = pafs.S3FileSystem(
        access_key=options.get("aws_access_key_id"),
        secret_key=options.get("aws_secret_access_key"),
        region=options.get("region"),
        endpoint_override=host or None,
        scheme=scheme,
    )
    return fs, uri.removeprefix("s3://")
