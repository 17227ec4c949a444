"""zsr homes in earlier formats (``tests/fixtures/home-v1.tar.gz``, ``home-v2.tar.gz``), and a way to see what
changed.

The format-1 archive was made with zsr before vector spaces: ``zsr ingest`` of 8 Cranfield documents as
corpus ``tiny`` with the bundled all-MiniLM-L6-v2, ``zsr testset add tiny human``, ``zsr synthesize
--generator extractive`` and ``zsr eval --methods dense,bm25,multiview``. Each archive holds ``home/`` and
``src/``, the source that was ingested.
"""

from __future__ import annotations

import hashlib
import tarfile
from pathlib import Path

from storage.home import Home

ARCHIVE = Path(__file__).resolve().parent / "fixtures" / "home-v1.tar.gz"
# Format 2 (vector spaces, metadata only as JSON), made with zsr at commit 3deb245: ``zsr ingest`` of the 8
# records of ``src/docs.jsonl`` (metadata year, source, lang; pages int and float; volume int and text;
# tags a list) as corpus ``tiny`` with the bundled all-MiniLM-L6-v2, then ``zsr synthesize -c tiny
# --generator extractive --roundtrip-k 0`` (title and query views, the expanded index).
ARCHIVE_V2 = ARCHIVE.with_name("home-v2.tar.gz")


def unpack_home_v1(folder: Path, archive_path: Path = ARCHIVE) -> tuple[Home, Path]:
    """The format-1 home unpacked under ``folder``, and the source folder it was ingested from."""
    with tarfile.open(archive_path) as archive:
        archive.extractall(folder, filter="data")
    root = folder / "home"
    return Home(root, str(root / "lancedb"), root / "warehouse", root / "testsets"), folder / "src"


def unpack_home_v2(folder: Path) -> tuple[Home, Path]:
    """The format-2 home (:data:`ARCHIVE_V2`) unpacked under ``folder``, and its source folder."""
    return unpack_home_v1(folder, ARCHIVE_V2)


def tree(root: Path) -> dict[str, str]:
    """Every folder and file under ``root``, files with a digest of their bytes: equal trees, equal homes."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        if path.is_file()
        else "dir"
        for path in sorted(root.rglob("*"))
    }
