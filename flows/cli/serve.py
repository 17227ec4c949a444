"""``zsr serve``: a local Prefect server, the zsr deployments and a process worker, run and stopped as one.

Order of start: server (SQLite under ``$PREFECT_HOME`` unless ``--database`` or ``ZSR_PREFECT_DATABASE_URL``
names another database, PostgreSQL for workers on several machines), wait for ``/api/health``,
process work pool, the ``llm`` tag concurrency limit, an automation that marks runs whose heartbeats stop
``Crashed``, the regression automation (``flows/cli/alerts.py``), ``prefect deploy --all`` from
``deployments/prefect.yaml``, then a worker. A worker that dies is started again. On Ctrl-C or SIGTERM
the worker stops first, then the server; whatever has not exited after the grace period is killed with
its whole process group. Telemetry is off for every process started here. Nothing else in zsr needs the
server: every ``zsr`` command works without it.

If serve itself is killed (SIGKILL, OOM), its children must not hold the port and the pool: the kernel
sends each of them SIGTERM when serve dies (Linux's parent-death signal), and serve records its children's
process groups in ``$PREFECT_HOME/zsr-serve.json``, so the next ``zsr serve`` on that home stops whatever
of them is still running (a flow run the worker started, a worker ignoring SIGTERM) before it starts.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import httpx
import typer

from flows.cli.alerts import replace_regression_alert
from tasks.settings import get_settings

PROJECT_DIR = Path(__file__).resolve().parents[2]
PREFECT_FILE = PROJECT_DIR / "deployments" / "prefect.yaml"
LLM_TAG = "llm"  # flows.steps.LLM_TAG, repeated so that serve imports no flow code
TELEMETRY_OFF = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
}
HEARTBEAT_SECONDS = 30  # flow runs report every 30 s (Prefect's minimum) ...
ZOMBIE_SECONDS = 90  # ... and are marked Crashed after 90 s of silence (its machine died with it)
ZOMBIE_AUTOMATION = "zsr: crash silent flow runs"
STATE_FILE = "zsr-serve.json"  # under PREFECT_HOME: serve's pid and its children's process groups
_PR_SET_PDEATHSIG = 1  # prctl option (linux/prctl.h)
_RESTARTS = 5  # worker restarts allowed within _RESTART_WINDOW seconds before serve gives up
_RESTART_WINDOW = 600.0


class ServeError(RuntimeError):
    """A part of the stack did not start; the message names its log file."""


class Stack:
    """The server, the deployments and one worker, as child processes in their own process groups."""

    def __init__(
        self,
        port: int = 4200,
        pool: str = "zsr",
        host: str = "127.0.0.1",
        database: str | None = None,
        prefect_file: Path = PREFECT_FILE,
        llm_limit: int = 2,
        worker_limit: int | None = None,
        grace: float = 30.0,
        zombie_after: int = ZOMBIE_SECONDS,
        startup_timeout: float = 300.0,
    ) -> None:
        self.port, self.pool, self.host = port, pool, host
        self.prefect_file, self.llm_limit, self.grace = prefect_file.resolve(), llm_limit, grace
        self.worker_limit = worker_limit
        self.startup_timeout, self.zombie_after = startup_timeout, zombie_after
        client_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        self.url = f"http://{client_host}:{port}"
        self.api_url = f"{self.url}/api"
        self.env = {**os.environ, **TELEMETRY_OFF}
        self.env.setdefault("PREFECT_HOME", str(get_settings().home_dir / "prefect"))
        self.env.setdefault("ZSR_PROJECT_DIR", str(PROJECT_DIR))
        self.env.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "tasks,storage")
        self.env.setdefault("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", str(HEARTBEAT_SECONDS))
        self.env["PREFECT_DEFAULT_WORK_POOL_NAME"] = pool
        # `server start --port` alone leaves the UI calling the default port: say where the API is.
        self.env.update(PREFECT_SERVER_API_HOST=host, PREFECT_SERVER_API_PORT=str(port))
        self.env.setdefault("PREFECT_UI_API_URL", self.api_url)
        secret = get_settings().prefect_database_url
        database = database or (secret.get_secret_value() if secret else None)
        if database:  # else the server's own setting, if any in the environment, or SQLite
            self.env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = database
        self.home = Path(self.env["PREFECT_HOME"]).expanduser()
        self.logs = self.home / "logs"
        self.server: subprocess.Popen[bytes] | None = None
        self.worker: subprocess.Popen[bytes] | None = None
        self._restarts: list[float] = []
        self._workers_started = 0
        self._worker_prefix = f"zsr-{socket.gethostname()}-{os.getpid()}-"  # names this serve's workers
        self._groups: list[int] = []  # process groups of every child started, for a later serve to reap

    # -- processes -----------------------------------------------------------------------------------------
    def _spawn(self, name: str, *args: str, client: bool = True) -> subprocess.Popen[bytes]:
        self.logs.mkdir(parents=True, exist_ok=True)
        env = {**self.env, "PREFECT_API_URL": self.api_url}
        if not client:  # the server is the API: it must not inherit a client setting pointing elsewhere
            env.pop("PREFECT_API_URL")
        with (self.logs / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "prefect", *args],
                cwd=PROJECT_DIR,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches serve only; it stops the children in order
                preexec_fn=_die_with_parent,
            )
        self._groups.append(process.pid)
        self._save_state()
        return process

    # -- leftovers of a serve that was killed ----------------------------------------------------------------
    def _save_state(self) -> None:
        state = {"pid": os.getpid(), "port": self.port, "groups": self._groups}
        self.home.mkdir(parents=True, exist_ok=True)
        tmp = self.home / f"{STATE_FILE}.tmp"
        tmp.write_text(json.dumps(state))
        tmp.replace(self.home / STATE_FILE)

    def reap_previous(self) -> list[int]:
        """Stop what a killed ``zsr serve`` on this home left running; returns the pids it stopped.

        Raises:
            ServeError: that serve is still alive (two stacks on one home would share its database).
        """
        path = self.home / STATE_FILE
        if not path.is_file():
            return []
        state = json.loads(path.read_text())
        if state["pid"] != os.getpid() and _alive(state["pid"]) and "serve" in _cmdline(state["pid"]):
            raise ServeError(
                f"another zsr serve (pid {state['pid']}, port {state['port']}) runs on {self.home}; "
                f"stop it first (Ctrl-C, or kill {state['pid']})"
            )
        stopped = [pid for group in state["groups"] for pid in _members(group) if "prefect" in _cmdline(pid)]
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in stopped:
                with suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + 10
            while any(_alive(pid) for pid in stopped) and time.monotonic() < deadline:
                time.sleep(0.2)
        path.unlink(missing_ok=True)
        return stopped

    def _run(self, name: str, *args: str, timeout: float = 300.0) -> None:
        process = self._spawn(name, "--no-prompt", *args)
        try:
            code = process.wait(timeout)
        except subprocess.TimeoutExpired:
            _stop(process, 0)
            raise ServeError(
                f"`prefect {' '.join(args)}` took over {timeout:.0f} s; see {self._log(name)}"
            ) from None
        if code != 0:
            raise ServeError(f"`prefect {' '.join(args)}` failed (exit {code}); see {self._log(name)}")

    def _log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def start_server(self) -> None:
        """Stop a killed serve's leftovers, then start ``prefect server start`` and wait for its API."""
        stopped = self.reap_previous()
        if stopped:
            typer.echo(
                f"stopped {len(stopped)} process(es) a previous zsr serve left running on {self.home} "
                f"(pids {', '.join(map(str, stopped))})",
                err=True,
            )
        with socket.socket() as probe:  # else another server on the port would answer our health checks
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((self.host, self.port))
            except OSError as error:
                raise ServeError(
                    f"port {self.port} on {self.host} is taken ({error}); pick another --port"
                ) from None
        args = ["server", "start", "--host", self.host, "--port", str(self.port), "--analytics-off"]
        self.server = self._spawn("server", *args, client=False)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.server.poll() is not None:
                raise ServeError(
                    f"the Prefect server exited at start (code {self.server.returncode}); "
                    f"is port {self.port} free? See {self._log('server')}"
                )
            if self.healthy():
                return
            time.sleep(0.5)
        raise ServeError(f"the Prefect server did not answer within {self.startup_timeout:.0f} s")

    def healthy(self) -> bool:
        """Whether the API answers its health check."""
        return api_healthy(self.api_url)

    def api(
        self, method: str, path: str, json: Any = None, ok: tuple[int, ...] = (), patience: float = 60.0
    ) -> httpx.Response:
        """One API call, retried while the server is busy (SQLite answers 503 while its file is locked)."""
        deadline = time.monotonic() + patience
        while True:
            try:
                response = httpx.request(method, f"{self.api_url}{path}", json=json, timeout=30)
                if response.status_code in ok or response.is_success:
                    return response
                problem = f"{response.status_code} {response.text[:300]}"
                if response.status_code not in (429, 500, 502, 503, 504):
                    break
            except httpx.HTTPError as error:
                problem = str(error)
            if time.monotonic() > deadline:
                break
            time.sleep(1)
        raise ServeError(f"{method} {path} failed: {problem}; see {self._log('server')}")

    def setup(self) -> None:
        """Create what is missing (pool, ``llm`` limit, zombie and regression automations), deploy."""
        if self.api("GET", f"/work_pools/{self.pool}", ok=(404,)).status_code == 404:
            self._run("setup", "work-pool", "create", self.pool, "--type", "process")
        self.api("POST", "/concurrency_limits/", {"tag": LLM_TAG, "concurrency_limit": self.llm_limit})
        named = {"automations": {"name": {"any_": [ZOMBIE_AUTOMATION]}}}
        for old in self.api("POST", "/automations/filter", named).json():  # its window may have changed
            self.api("DELETE", f"/automations/{old['id']}")
        if self.zombie_after:
            self.api("POST", "/automations/", zombie_automation(self.zombie_after))
        replace_regression_alert(self.api, get_settings().regression_webhook)
        self._run("deploy", "deploy", "--all", "--prefect-file", str(self.prefect_file))

    def start_worker(self) -> None:
        """Start a process worker on the pool and wait until the server sees it online."""
        self._workers_started += 1
        name = f"{self._worker_prefix}{self._workers_started}"
        args = ["--pool", self.pool, "--type", "process", "--name", name, "--install-policy", "never"]
        if self.worker_limit:
            args += ["--limit", str(self.worker_limit)]
        self.worker = self._spawn("worker", "worker", "start", *args)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.worker.poll() is not None:
                raise ServeError(f"the worker exited at start; see {self._log('worker')}")
            if name in self.online_workers():
                return
            time.sleep(0.5)
        raise ServeError(f"the worker did not come up within {self.startup_timeout:.0f} s")

    def online_workers(self) -> list[str]:
        """Names of the workers the server sees polling the pool."""
        workers = self.api("POST", f"/work_pools/{self.pool}/workers/filter", {}).json()
        return [w["name"] for w in workers if w.get("status") == "ONLINE"]

    def supervise(self) -> None:
        """Restart a worker that died; raise if the server died or the worker keeps dying."""
        if self.server is None or self.server.poll() is not None:
            raise ServeError(f"the Prefect server stopped; see {self._log('server')}")
        if self.worker is not None and self.worker.poll() is not None:
            now = time.monotonic()
            self._restarts = [t for t in self._restarts if now - t < _RESTART_WINDOW] + [now]
            if len(self._restarts) > _RESTARTS:
                raise ServeError(
                    f"the worker died {len(self._restarts)} times in {_RESTART_WINDOW:.0f} s; "
                    f"see {self._log('worker')}"
                )
            typer.echo(f"worker exited (code {self.worker.returncode}); starting a new one", err=True)
            self.start_worker()

    def stop_worker(self) -> None:
        """Stop the worker: SIGINT, SIGTERM halfway through the grace period, then SIGKILL of its group."""
        if self.worker is not None:
            _stop(self.worker, self.grace)

    def settle_runs(self, timeout: float = 5.0) -> None:
        """Runs our workers left unfinished: a moment to report their end, then they are marked Crashed.

        A flow run process notices its worker is gone and reports itself, unless the server stops first;
        this keeps a run from showing as Running forever. Runs of other workers on the pool are left alone.
        """
        query = {
            "work_pools": {"name": {"any_": [self.pool]}},
            "flow_runs": {"state": {"type": {"any_": ["PENDING", "RUNNING", "CANCELLING"]}}},
        }
        deadline = time.monotonic() + timeout
        while True:
            runs = [
                run
                for run in self.api("POST", "/flow_runs/filter", query, patience=5).json()
                if str(run.get("labels", {}).get("prefect.worker.name", "")).startswith(self._worker_prefix)
            ]
            if not runs or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        for run in runs:
            state = {"type": "CRASHED", "message": "zsr serve stopped while the run was in progress"}
            self.api("POST", f"/flow_runs/{run['id']}/set_state", {"state": state, "force": True}, patience=5)

    def stop(self) -> None:
        """Worker first, then the runs it left, then the server."""
        self.stop_worker()
        if self.server is not None:
            if self.server.poll() is None:
                try:
                    self.settle_runs()
                except ServeError as error:
                    typer.echo(f"could not settle unfinished runs: {error}", err=True)
            _stop(self.server, self.grace)
        (self.home / STATE_FILE).unlink(missing_ok=True)

    def __enter__(self) -> Stack:
        try:
            self.start_server()
            self.setup()
            self.start_worker()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def api_healthy(api_url: str, timeout: float = 2.0) -> bool:
    """Whether a Prefect API at ``api_url`` (``.../api``) answers its health check within ``timeout`` s."""
    try:
        return httpx.get(f"{api_url}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def zombie_automation(seconds: int = ZOMBIE_SECONDS) -> dict[str, Any]:
    """Prefect's zombie-run recipe: a run whose heartbeats stop without a final state is marked Crashed.

    A run whose process or worker dies is reported at once; this covers the rest (its machine died too),
    so the UI never shows a dead run as Running.
    """
    final = [f"prefect.flow-run.{s}" for s in ("Completed", "Failed", "Cancelled", "Crashed")]
    return {
        "name": ZOMBIE_AUTOMATION,
        "description": f"Flow runs silent for {seconds} s (no heartbeat, no final state) are Crashed.",
        "enabled": True,
        "trigger": {
            "type": "event",
            "posture": "Proactive",
            "match": {"prefect.resource.id": "prefect.flow-run.*"},
            "after": ["prefect.flow-run.heartbeat"],
            "expect": ["prefect.flow-run.heartbeat", *final],
            "for_each": ["prefect.resource.id"],
            "threshold": 1,
            "within": seconds,
        },
        "actions": [
            {
                "type": "change-flow-run-state",
                "state": "CRASHED",
                "message": f"No heartbeat for {seconds} s: the run's process or machine is gone.",
            }
        ],
    }


def _stop(process: subprocess.Popen[bytes], grace: float) -> None:
    """Ask the process group to stop (SIGINT, then SIGTERM halfway), kill it after ``grace`` seconds."""
    if process.poll() is None:
        for sig, wait in ((signal.SIGINT, grace / 2), (signal.SIGTERM, grace / 2)):
            _signal_group(process, sig, leader_only=True)
            try:
                process.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
    _signal_group(process, signal.SIGKILL)  # leftovers of the group (flow runs, uvicorn workers)
    process.wait()


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals, leader_only: bool = False) -> None:
    try:
        if leader_only:
            process.send_signal(sig)
        else:
            os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _die_with_parent() -> None:
    """In each child, before it runs Prefect: SIGTERM from the kernel when serve dies, however it dies."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs; a zombie (exited, not yet reaped by its parent) holds nothing: gone."""
    try:
        return _stat(pid)[0] != "Z"
    except (OSError, IndexError):
        return False


def _stat(pid: int) -> list[str]:
    """The fields of ``/proc/<pid>/stat`` after ``pid (comm)``: state, ppid, pgrp, ..."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _members(group: int) -> list[int]:
    """The live processes of a process group (from /proc; the group outlives its leader)."""
    members = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            fields = _stat(int(proc.name))
        except (OSError, IndexError):
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            members.append(int(proc.name))
    return members


def _raise_interrupt(signum: int, frame: FrameType | None) -> Any:
    raise KeyboardInterrupt


@contextmanager
def _signals_handled() -> Iterator[None]:
    """SIGTERM stops serve as Ctrl-C does (the previous handlers come back on exit)."""
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, _raise_interrupt)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _ignore_signals() -> None:
    """A second Ctrl-C must not cut the shutdown short and leave orphans: the grace period bounds it."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


def serve(
    port: Annotated[int, typer.Option(help="Port of the Prefect API and UI.")] = 4200,
    pool: Annotated[str, typer.Option(help="Process work pool to create (if missing) and serve.")] = "zsr",
    host: Annotated[
        str, typer.Option(help="Interface the server binds (0.0.0.0 for every one).")
    ] = "127.0.0.1",
    database: Annotated[
        str | None,
        typer.Option(
            help="SQLAlchemy URL of the Prefect database, e.g. postgresql+asyncpg://user:pw@host/prefect "
            "for several workers (default: ZSR_PREFECT_DATABASE_URL, else SQLite under PREFECT_HOME)."
        ),
    ] = None,
    llm_limit: Annotated[
        int, typer.Option(min=1, help="Tasks calling the LLM at once, across all flows (tag 'llm').")
    ] = 2,
    worker_limit: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Flow runs the worker runs at once (default: no limit); with workers on other machines, "
            "a limit leaves the next runs to them.",
        ),
    ] = None,
    prefect_file: Annotated[Path, typer.Option(help="Deployments to apply.")] = PREFECT_FILE,
    grace: Annotated[
        float, typer.Option(min=0, help="Seconds each process gets to stop on Ctrl-C before it is killed.")
    ] = 30.0,
    zombie_after: Annotated[
        int,
        typer.Option(
            min=0,
            help=f"Mark a run Crashed after this many seconds without a heartbeat (they come every "
            f"{HEARTBEAT_SECONDS} s; 0: never).",
        ),
    ] = ZOMBIE_SECONDS,
) -> None:
    """Start a Prefect server, deploy the zsr flows, run a worker; Ctrl-C stops them all.

    PREFECT_HOME defaults to $ZSR_HOME/prefect (the SQLite database and the logs live there). The nightly
    re-index runs on its cron schedule; evaluate, synthesize and reindex run from the UI's Run button.
    """
    stack = Stack(
        port=port,
        pool=pool,
        host=host,
        database=database,
        prefect_file=prefect_file,
        llm_limit=llm_limit,
        worker_limit=worker_limit,
        grace=grace,
        zombie_after=zombie_after,
    )
    failed = False
    with _signals_handled():
        try:
            typer.echo(f"starting the Prefect server on {stack.url} (PREFECT_HOME={stack.home})")
            stack.start_server()
            stack.setup()
            stack.start_worker()
            typer.echo(f"deployed {stack.prefect_file} to work pool {pool!r}; worker started")
            typer.echo(f"Prefect UI: {stack.url}")
            typer.echo(f"logs: {stack.logs}; press Ctrl-C to stop")
            while True:
                stack.supervise()
                time.sleep(1.0)
        except KeyboardInterrupt:
            typer.echo(f"stopping the worker, then the server (up to {grace:.0f} s each) ...")
        except ServeError as error:
            typer.echo(f"error: {error}", err=True)
            failed = True
        finally:
            _ignore_signals()
            stack.stop()
    typer.echo("stopped")
    if failed:
        raise typer.Exit(1)


if __name__ == "__main__":
    typer.run(serve)
