"""A zsr home in the previous format (``tests/fixtures/home-v1.tar.gz``), and a way to see what changed.

The archive was made with zsr before vector spaces (home format 1): ``zsr ingest`` of 8 Cranfield documents
as corpus ``tiny`` with the bundled all-MiniLM-L6-v2, ``zsr testset add tiny human``, ``zsr synthesize
--generator extractive`` and ``zsr eval --methods dense,bm25,multiview``. It holds ``home/`` and ``src/``,
the source that was ingested.
"""

from __future__ import annotations

import hashlib
import tarfile
from pathlib import Path

from storage.home import Home

ARCHIVE = Path(__file__).resolve().parent / "fixtures" / "home-v1.tar.gz"


def unpack_home_v1(folder: Path) -> tuple[Home, Path]:
    """The format-1 home unpacked under ``folder``, and the source folder it was ingested from."""
    with tarfile.open(ARCHIVE) as archive:
        archive.extractall(folder, filter="data")
    root = folder / "home"
    return Home(root, str(root / "lancedb"), root / "warehouse", root / "testsets"), folder / "src"


def tree(root: Path) -> dict[str, str]:
    """Every folder and file under ``root``, files with a digest of their bytes: equal trees, equal homes."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        if path.is_file()
        else "dir"
        for path in sorted(root.rglob("*"))
    }
