"""The ``schedule`` group: nightly runs of your own corpora on the running Prefect server, without YAML.

``zsr schedule add CORPUS --source PATH --cron "0 2 * * *"`` creates, or updates, the deployment
``nightly/CORPUS-nightly``: a copy of the shipped example ``nightly-reindex`` (entry point, work pool, pull
step, parameter form, tags, concurrency limit) read from the server, with CORPUS's parameters and one cron
schedule. ``list`` shows every schedule of the ``nightly`` flow (the example's too); ``rm CORPUS`` deletes
CORPUS's deployment and, only when CORPUS is one the example schedules (``demo``), that schedule of it.

Why a deployment per corpus rather than a schedule per corpus on ``nightly-reindex`` (Prefect 3 lets each
schedule carry its own parameters and slug):

- ``zsr serve`` runs ``prefect deploy --all`` on every start, which PATCHes ``nightly-reindex`` with the
  schedules of ``deployments/prefect.yaml``; unless every schedule, the YAML's included, has a slug, the
  server deletes the deployment's schedules and recreates the YAML's (Prefect 3.9,
  ``server/api/deployments.py:update_deployment``), so schedules added beside the example are lost at the
  next restart. A deployment the YAML does not name is left alone (tested across a restart).
- The concurrency limit (1, ``CANCEL_NEW``) belongs to a deployment: on one shared deployment two corpora
  due at 02:00 would cancel each other. Each corpus's deployment carries its own limit, so a corpus never
  runs twice at once and corpora never block each other.
- ``add`` is an upsert by deployment name (the server replaces the schedules of an existing deployment), so
  adding a corpus again updates its cron, source and time zone instead of doubling them.
- The UI lists each corpus as a deployment of the ``nightly`` flow; its Run button defaults to the corpus.

The copy is taken when ``add`` runs: after a change of ``prefect.yaml`` that should reach the corpora (a new
job variable, say), add them again. A corpus the example schedules (``demo``) is refused by ``add``: two
deployments would run it at once. Runs of ``CORPUS-nightly`` carry that deployment's name as their label
(eval ids, artifact keys, "previous run" comparisons), so each corpus compares with its own last night.

Side effects: on the Prefect server only (deployments of the ``nightly`` flow, their schedules and planned
runs), nothing under ``$ZSR_HOME``. Idempotency key: the deployment name ``CORPUS-nightly``. After an
update ``add`` also deletes planned runs that no current schedule made: the server's scheduler plans a new
deployment within seconds and can insert the runs of a schedule just replaced.

Everything given is checked before the server is contacted: the corpus name, the cron (Prefect's own
validator), the time zone (default: the machine's) and the source (it must exist; it is stored absolute,
since the worker runs in the zsr checkout). The server is ``PREFECT_API_URL`` (the environment or the
Prefect profile), else ``zsr serve``'s default address.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from flows.cli.common import JsonOpt, app, emit_json, narrow, out, show, user_errors, warn
from flows.cli.serve import api_healthy
from tasks.ingest.formats import SourceFormat

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.objects import DeploymentSchedule
    from prefect.client.schemas.responses import DeploymentResponse

schedule = typer.Typer(
    help="Nightly re-index, synthesis and evaluation of your corpora on the running Prefect server.",
    no_args_is_help=True,
)
app.add_typer(schedule, name="schedule")

FLOW = "nightly"  # the flow of flows/nightly.py
TEMPLATE = "nightly-reindex"  # the shipped example in deployments/prefect.yaml, copied for each corpus
SUFFIX = "-nightly"  # a corpus's deployment: never the example's name, whatever the corpus is called
TAG = "zsr-schedule"  # marks the deployments `add` made: `rm` deletes no other
DEFAULT_API = "http://127.0.0.1:4200/api"  # `zsr serve`'s default port
CORPUS_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")  # the registry's rule (flows import no storage)


class NoServerError(LookupError):
    """No Prefect server answers at the URL (shown as a one-line error, exit 2)."""

    def __init__(self, url: str) -> None:
        super().__init__(f"no Prefect server at {url}: start one with `zsr serve`")


def api_url() -> str:
    """``PREFECT_API_URL`` (environment or Prefect profile), else ``zsr serve``'s default address."""
    from prefect.settings import PREFECT_API_URL

    return (os.environ.get("PREFECT_API_URL") or PREFECT_API_URL.value() or DEFAULT_API).rstrip("/")


def local_timezone() -> str:
    """The machine's IANA zone name (``TZ``, else where ``/etc/localtime`` points), or ``UTC``."""
    from zoneinfo import available_timezones

    zones = available_timezones()
    name = os.environ.get("TZ", "").removeprefix(":")
    if name not in zones:
        target = str(Path("/etc/localtime").resolve())
        name = target.split("/zoneinfo/", 1)[-1] if "/zoneinfo/" in target else ""
    return name if name in zones else "UTC"


def deployment_name(corpus: str) -> str:
    """The deployment ``add`` makes for ``corpus`` (under the ``nightly`` flow)."""
    return f"{corpus}{SUFFIX}"


def check_schedule(corpus: str, source: Path, cron: str, timezone: str) -> Path:
    """Check what ``add`` was given, before any server is contacted; returns the source made absolute.

    Raises:
        ValueError: a bad corpus name, cron or time zone (the message names the fix).
        FileNotFoundError: the source does not exist.
    """
    from prefect.client.schemas.schedules import CronSchedule
    from pydantic import ValidationError

    if not CORPUS_NAME.match(corpus):
        raise ValueError(
            f"corpus name {corpus!r} is not allowed; use 1-64 letters, digits, '-' or '_' starting with a "
            "letter or digit"
        )
    try:
        CronSchedule(cron=cron, timezone=timezone)
    except ValidationError as error:
        field = str(error.errors()[0]["loc"][0])
        if field == "cron":
            raise ValueError(
                f"--cron {cron!r} is not a cron expression; give five fields, minute hour day month weekday, "
                'e.g. --cron "0 2 * * *" for 02:00 every day'
            ) from None
        raise ValueError(
            f"--timezone {timezone!r} is not an IANA time zone; use a name such as Europe/Paris or UTC"
        ) from None
    path = source.expanduser().resolve()
    if not path.exists():
        raise FileNotFoundError(
            f"--source {source} does not exist (resolved to {path}); give the corpus's folder or file, "
            "as for `zsr ingest`"
        )
    return path


@contextmanager
def prefect_client(url: str) -> Iterator[SyncPrefectClient]:
    """A Prefect client on ``url``, once its health check answers.

    Raises:
        NoServerError: nothing answers at ``url`` (also when the server goes away meanwhile).
        ValueError: the server refused a request (its reason in the message).
    """
    import httpx
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if not api_healthy(url, timeout=10):
        raise NoServerError(url)
    try:
        with temporary_settings({PREFECT_API_URL: url}), get_client(sync_client=True) as client:
            yield client
    except httpx.TransportError:
        raise NoServerError(url) from None
    except httpx.HTTPStatusError as error:
        raise ValueError(
            f"the Prefect server at {url} refused {error.request.method} {error.request.url.path}: "
            f"{error.response.status_code} {error.response.text[:300]}"
        ) from None


def _read(client: SyncPrefectClient, name: str) -> DeploymentResponse | None:
    from prefect.exceptions import ObjectNotFound

    try:
        return client.read_deployment_by_name(f"{FLOW}/{name}")
    except ObjectNotFound:
        return None


def _corpus(deployment: DeploymentResponse, item: DeploymentSchedule) -> str | None:
    return {**deployment.parameters, **item.parameters}.get("corpus")


def add_schedule(
    client: SyncPrefectClient, url: str, corpus: str, parameters: dict[str, Any], cron: str, timezone: str
) -> tuple[DeploymentResponse, bool]:
    """Create or update ``nightly/CORPUS-nightly`` from the example; returns it and whether it existed.

    Raises:
        LookupError: the example deployment is not on the server.
        ValueError: the example schedules ``corpus`` already, or a deployment of that name was made by hand.
    """
    from prefect.client.schemas.actions import DeploymentScheduleCreate
    from prefect.client.schemas.schedules import CronSchedule

    template = _read(client, TEMPLATE)
    if template is None:
        raise LookupError(
            f"deployment {FLOW}/{TEMPLATE} is not on the Prefect server at {url}, and each corpus's nightly "
            "deployment is a copy of it: start the server with `zsr serve` (it deploys "
            "deployments/prefect.yaml)"
        )
    if any(_corpus(template, item) == corpus for item in template.schedules):
        raise ValueError(
            f"corpus {corpus!r} is scheduled by the shipped example {FLOW}/{TEMPLATE} "
            "(deployments/prefect.yaml): change its schedule there, or set it `active: false` there and "
            f"run `zsr schedule rm {corpus}` before adding it here"
        )
    name = deployment_name(corpus)
    existing = _read(client, name)
    if existing is not None and TAG not in existing.tags:
        raise ValueError(
            f"deployment {FLOW}/{name} exists on {url} and was not made by `zsr schedule add`; "
            "delete it in the Prefect UI first"
        )
    limit = template.global_concurrency_limit.limit if template.global_concurrency_limit else None
    client.create_deployment(  # an upsert by (flow, name): the schedules of an existing one are replaced
        flow_id=template.flow_id,
        name=name,
        description=f"Corpus {corpus} (`zsr schedule add`). {template.description or ''}".strip(),
        schedules=[
            DeploymentScheduleCreate(
                schedule=CronSchedule(cron=cron, timezone=timezone),
                active=True,
                parameters=parameters,
                slug=corpus,
            )
        ],
        concurrency_limit=limit,
        concurrency_options=template.concurrency_options,
        parameters=parameters,
        work_pool_name=template.work_pool_name,
        work_queue_name=template.work_queue_name,
        tags=list(dict.fromkeys([*template.tags, TAG])),
        path=template.path,
        entrypoint=template.entrypoint,
        parameter_openapi_schema=template.parameter_openapi_schema,
        pull_steps=template.pull_steps,
        enforce_parameter_schema=template.enforce_parameter_schema,
        job_variables=template.job_variables,
        paused=False,
    )
    deployment = _read(client, name)
    assert deployment is not None
    drop_stale_runs(client, deployment)
    return deployment, existing is not None


def drop_stale_runs(client: SyncPrefectClient, deployment: DeploymentResponse) -> list[str]:
    """Delete the deployment's planned runs that no current schedule made; returns their ids.

    The server deletes a deployment's planned runs when it is updated, but its scheduler plans a new
    deployment within seconds and may insert the runs of the old schedule after that delete (seen when a
    corpus was added again 5 s after the first ``add``): without this, the old cron would still fire.
    """
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterDeploymentId,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.exceptions import ObjectNotFound

    planned = FlowRunFilter(
        deployment_id=FlowRunFilterDeploymentId(any_=[deployment.id]),
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])),
    )
    current = {item.id for item in deployment.schedules}
    stale = [
        run.id
        for run in client.read_flow_runs(flow_run_filter=planned)
        if run.auto_scheduled and run.created_by is not None and run.created_by.id not in current
    ]
    for run_id in stale:
        with suppress(ObjectNotFound):  # started or deleted meanwhile
            client.delete_flow_run(run_id)
    return [str(run_id) for run_id in stale]


def list_schedules(client: SyncPrefectClient) -> list[dict[str, Any]]:
    """One row per schedule of the ``nightly`` flow's deployments (the example's included), by corpus."""
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    deployments = client.read_deployments(flow_filter=FlowFilter(name=FlowFilterName(any_=[FLOW])))
    rows = [schedule_row(d, item) for d in deployments for item in d.schedules]
    return sorted(rows, key=lambda row: (str(row["corpus"]), row["deployment"]))


def schedule_row(deployment: DeploymentResponse, item: DeploymentSchedule) -> dict[str, Any]:
    """A schedule as ``list`` shows it; ``active`` is false when the schedule or its deployment is paused."""
    when = item.schedule
    cron = getattr(when, "cron", None)
    timezone = getattr(when, "timezone", None) or "UTC"
    active = item.active and not deployment.paused
    parameters = {**deployment.parameters, **item.parameters}
    return {
        "corpus": parameters.get("corpus"),
        "cron": cron if cron is not None else _describe(when),
        "timezone": timezone,
        "source": parameters.get("source"),
        "active": active,
        "next_run": next_run(cron, timezone) if active and cron is not None else None,
        "deployment": deployment.name,
        "example": deployment.name == TEMPLATE,
        "parameters": parameters,
    }


def next_run(cron: str, timezone: str, after: datetime | None = None) -> str:
    """When ``cron`` next fires in ``timezone``, as the server's scheduler computes it (minute precision)."""
    from prefect.server.schemas.schedules import CronSchedule

    (when,) = asyncio.run(CronSchedule(cron=cron, timezone=timezone).get_dates(n=1, start=after))
    return f"{when:%Y-%m-%d %H:%M}"


def _describe(when: Any) -> str:
    interval = getattr(when, "interval", None)
    if interval is not None:
        return f"every {interval.total_seconds():.0f} s"
    return str(getattr(when, "rrule", when))


def remove_schedule(client: SyncPrefectClient, url: str, corpus: str) -> list[dict[str, Any]]:
    """Delete ``corpus``'s deployment and the example's schedules of ``corpus``; returns what went.

    Raises:
        LookupError: nothing schedules ``corpus``.
    """
    removed = []
    own = _read(client, deployment_name(corpus))
    if own is not None and TAG in own.tags:
        client.delete_deployment(own.id)  # its scheduled runs go with it
        removed += [schedule_row(own, item) for item in own.schedules]
    template = _read(client, TEMPLATE)
    if template is not None:
        for item in template.schedules:
            if _corpus(template, item) == corpus:
                client.delete_deployment_schedule(template.id, item.id)
                removed.append(schedule_row(template, item))
    if not removed:
        raise LookupError(
            f"no nightly schedule of corpus {corpus!r} on {url}; `zsr schedule list` shows them"
        )
    return removed


CronOpt = Annotated[
    str, typer.Option("--cron", help='When to run, five cron fields, e.g. "0 2 * * *" (02:00 daily).')
]


@schedule.command("add")
def add(
    corpus: Annotated[str, typer.Argument(help="The corpus to keep fresh (created by its first run).")],
    source: Annotated[
        Path, typer.Option("--source", help="Its BEIR folder, .jsonl/.csv/.parquet file or folder of files.")
    ],
    cron: CronOpt = "0 2 * * *",
    timezone: Annotated[
        str | None,
        typer.Option(
            "--timezone", help="IANA time zone of the cron, e.g. Europe/Paris (default: this machine's)."
        ),
    ] = None,
    fmt: Annotated[
        SourceFormat | None,
        typer.Option("--format", help="beir, jsonl, csv, parquet or folder (default: detected)."),
    ] = None,
    skip_bad: Annotated[
        bool, typer.Option(help="Skip bad records and report them instead of failing the run.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Run the nightly re-index, synthesis and evaluation of CORPUS on a cron; adding it again updates it."""
    with user_errors():
        zone = timezone or local_timezone()
        path = check_schedule(corpus, source, cron, zone)
        parameters: dict[str, Any] = {"corpus": corpus, "source": str(path), "fmt": fmt, "skip_bad": skip_bad}
        url = api_url()
        with prefect_client(url) as client:
            deployment, existed = add_schedule(client, url, corpus, parameters, cron, zone)
    (row,) = (schedule_row(deployment, item) for item in deployment.schedules)
    if as_json:
        emit_json({**row, "updated": existed})
        return
    verb = "updated" if existed else "scheduled"
    out.print(
        f"{verb} {corpus}: {cron} ({zone}), source {path}; next run {row['next_run']}\n"
        f"deployment {FLOW}/{deployment.name} on {url}",
        highlight=False,
        soft_wrap=True,
    )


@schedule.command("list")
def list_(as_json: JsonOpt = False) -> None:
    """The nightly schedules on the Prefect server, the shipped example's included."""
    with user_errors():
        with prefect_client(api_url()) as client:
            rows = list_schedules(client)
    if as_json:
        emit_json(rows)
    elif not rows:
        out.print("no nightly schedule on the server (`zsr schedule add`)", highlight=False)
    elif narrow():  # 80 columns: cron over its time zone, leaving the source room to stay readable
        show(
            ["corpus", "cron, timezone", "source", "active", "next run"],
            [
                [r["corpus"], f"{r['cron']}\n{r['timezone']}", r["source"], _yes(r["active"]), r["next_run"]]
                for r in rows
            ],
        )
    else:
        show(
            ["corpus", "cron", "timezone", "source", "active", "next run", "deployment"],
            [
                [
                    r["corpus"],
                    r["cron"],
                    r["timezone"],
                    r["source"],
                    _yes(r["active"]),
                    r["next_run"],
                    r["deployment"],
                ]
                for r in rows
            ],
        )


def _yes(value: bool) -> str:
    return "yes" if value else "no"


@schedule.command("rm")
def rm(
    corpus: Annotated[str, typer.Argument(help="The corpus whose nightly schedule to remove.")],
    as_json: JsonOpt = False,
) -> None:
    """Remove CORPUS's nightly schedule (the shipped example's only when CORPUS is the one it schedules)."""
    with user_errors():
        url = api_url()
        with prefect_client(url) as client:
            removed = remove_schedule(client, url, corpus)
    if as_json:
        emit_json(removed)
        return
    for row in removed:
        out.print(f"removed the nightly schedule of {corpus} ({FLOW}/{row['deployment']})", highlight=False)
        if row["example"]:
            warn(
                f"{FLOW}/{TEMPLATE} is declared in deployments/prefect.yaml: the next `zsr serve` puts its "
                "schedule back unless you set it `active: false` there"
            )
