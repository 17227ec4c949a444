"""A throwaway PostgreSQL server for tests: Debian's binaries, a fresh cluster in a temporary folder.

PostgreSQL refuses to run as root, so under root every server command runs as an unprivileged user
(``postgres``, which Debian's package creates, else ``nobody``) through ``runuser``, in a data folder that
user owns; pytest's ``tmp_path`` is no place for it (``/tmp/pytest-of-root`` is closed to other users).
The server listens on 127.0.0.1 and on a Unix socket inside its data folder only, with ``trust``
authentication: nothing outside this machine reaches it, and the test owns the whole cluster.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
from contextlib import suppress
from pathlib import Path

DEBIAN_BIN = Path("/usr/lib/postgresql")
USER = "zsr"  # the cluster's superuser, owner of the Prefect database
DATABASE = "prefect"


def postgres_bin() -> Path | None:
    """The folder holding ``pg_ctl``: on the PATH, else the newest Debian version; None when missing."""
    found = shutil.which("pg_ctl")
    if found:  # resolved: a link to Debian's pg_ctl has initdb and createdb beside its target only
        return Path(found).resolve().parent
    versions = [p for p in DEBIAN_BIN.glob("*/bin/pg_ctl") if p.parents[1].name.isdigit()]
    return max(versions, key=lambda p: int(p.parents[1].name)).parent if versions else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresServer:
    """One cluster: :meth:`start` creates (first time) and starts it, :meth:`halt` stops it, :meth:`remove`
    stops it and deletes its files."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.port = _free_port()
        self.runas: list[str] = []
        owner: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            for name in ("postgres", "nobody"):
                with suppress(KeyError):
                    owner = pwd.getpwnam(name)
                    break
            if owner is None:
                raise RuntimeError("running as root, and no user postgres or nobody to run PostgreSQL as")
            self.runas = ["runuser", "-u", owner.pw_name, "--"]
        self.root = Path(tempfile.mkdtemp(prefix="zsr-pg-"))  # mode 0700, like PostgreSQL wants its data
        if owner is not None:
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.url = f"postgresql+asyncpg://{USER}@127.0.0.1:{self.port}/{DATABASE}"
        self._client = ["-h", "127.0.0.1", "-p", str(self.port), "-U", USER]  # createdb's and psql's

    def _run(self, tool: str, *args: str, timeout: float = 120.0) -> str:
        result = subprocess.run(
            [*self.runas, str(self.bin_dir / tool), *args],
            cwd=self.root,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            output = f"{result.stdout}{result.stderr}\n{self.logs()}"
            raise RuntimeError(f"{tool} {' '.join(args)} failed (exit {result.returncode}):\n{output}")
        return result.stdout

    def logs(self) -> str:
        """The server's log, or what of it there is."""
        with suppress(OSError):
            return self.log.read_text()[-3000:]
        return ""

    def start(self) -> PostgresServer:
        """Create the cluster and its database on the first call; start the server, wait until it accepts."""
        if self.data.exists():
            self._pg_ctl_start()
            return self
        self._run("initdb", "-D", str(self.data), "-U", USER, "--auth=trust", "-E", "UTF8", "--no-sync")
        self._pg_ctl_start()
        self._run("createdb", *self._client, DATABASE)
        return self

    def _pg_ctl_start(self) -> None:
        options = f"-h 127.0.0.1 -p {self.port} -k {self.root} -c fsync=off"  # fsync: a test's data
        self._run("pg_ctl", "start", "-w", "-D", str(self.data), "-l", str(self.log), "-o", options)

    def query(self, sql: str) -> list[str]:
        """The rows ``sql`` returns in the Prefect database, one string per row (psql's unaligned output)."""
        return self._run("psql", *self._client, "-d", DATABASE, "-XAtc", sql).splitlines()

    def halt(self) -> None:
        """Stop the server as a maintenance restart does (``fast``: open sessions are cut); data stays."""
        self._run("pg_ctl", "stop", "-w", "-m", "fast", "-D", str(self.data))

    def remove(self) -> None:
        """Stop the server at once (its postmaster's process group if pg_ctl fails), delete the cluster."""
        try:
            self._run("pg_ctl", "stop", "-w", "-t", "30", "-m", "immediate", "-D", str(self.data))
        except (RuntimeError, subprocess.TimeoutExpired):
            with suppress(OSError, ValueError, IndexError):
                pid = int((self.data / "postmaster.pid").read_text().split()[0])
                os.killpg(os.getpgid(pid), signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)
