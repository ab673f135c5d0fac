"""`registry plugins`, `registry worker`, `registry outbox`: plugins and follow-up work."""

from __future__ import annotations

import os
import signal
import threading
from typing import Annotated, Any

import typer

from open_registry.cli.options import DatabaseOpt, DataDirOpt, NoDefaultOpt, SchemasOpt, open_from
from open_registry.cli.tables import echo_table
from open_registry.core.app import Registry, freeze_after_startup
from open_registry.core.outbox import deliveries
from open_registry.core.outbox import worker as outbox
from open_registry.core.plugins import describe


def _open(database_url: str | None, data_dir: Any, schemas: Any, no_default: bool) -> Registry:
    return open_from(database_url, data_dir, schemas, no_default)


def plugins(
    database_url: DatabaseOpt = None,
    data_dir: DataDirOpt = None,
    schemas: SchemasOpt = None,
    no_default_schemas: NoDefaultOpt = False,
) -> None:
    """List the loaded plugins, where they come from and the hooks they implement.

    Examples:

      registry plugins
    """
    reg = _open(database_url, data_dir, schemas, no_default_schemas)
    try:
        echo_table(
            ("PLUGIN", "FROM", "HOOKS"),
            ((p["name"], p["origin"], ", ".join(p["hooks"])) for p in describe(reg.pm)),
        )
    finally:
        reg.close()


def worker(
    threads: Annotated[int, typer.Option(help="Worker threads in this process")] = 1,
    once: Annotated[bool, typer.Option("--once", help="Deliver what is due, then exit")] = False,
    poll: Annotated[float, typer.Option(help="Seconds to wait when nothing is due")] = 1.0,
    processes: Annotated[
        int, typer.Option(help="Worker processes, each with --threads (PostgreSQL for more than 1)")
    ] = 1,
    database_url: DatabaseOpt = None,
    data_dir: DataDirOpt = None,
    schemas: SchemasOpt = None,
    no_default_schemas: NoDefaultOpt = False,
) -> None:
    """Deliver outbox events to the plugins (certificates, notifications, webhooks, ...).

    On PostgreSQL run as many worker processes and threads as needed: each event is claimed by
    one worker (FOR UPDATE SKIP LOCKED). On SQLite the server runs one worker itself.

    Examples:

      registry worker --threads 4

      registry worker --processes 4     # PostgreSQL: 4 processes, each its own connections

      registry worker --once            # deliver what is due (cron, tests)
    """
    if processes < 1:
        typer.secho("error: --processes must be at least 1", fg="red", err=True)
        raise typer.Exit(2)
    if processes > 1 and not once:
        options = {"threads": threads, "poll": poll, "database_url": database_url,
                   "data_dir": data_dir, "schemas": schemas,
                   "no_default_schemas": no_default_schemas}  # fmt: skip
        _run_processes(processes, options)
        return
    reg = _open(database_url, data_dir, schemas, no_default_schemas)
    try:
        if once:
            once_worker = outbox.Worker(
                reg, name="worker-once", max_batch_size=reg.settings.worker_max_batch
            )
            n = once_worker.run_once(limit=1_000_000)
            typer.echo(f"delivered {n} event(s)")
            sent = once_worker.send_due(limit=1_000_000)
            if sent:
                typer.echo(f"attempted {sent} delivery(ies)")
            return
        biggest = reg.settings.worker_max_batch
        workers = [
            outbox.Worker(reg, name=f"worker-{i}", max_batch_size=biggest) for i in range(threads)
        ]
        stop = threading.Event()

        def _stop(*_args: Any) -> None:
            stop.set()
            for w in workers:
                w.stop()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        freeze_after_startup(reg.settings)  # before the threads: docs/operations.md
        running = [w.start_thread(poll) for w in workers]
        typer.echo(f"worker process {os.getpid()}: {threads} thread(s) delivering; Ctrl-C to stop")
        stop.wait()
        for thread in running:  # each ends its batch: what it claimed is settled, not abandoned
            thread.join(timeout=60)
        delivered = sum(w.delivered for w in workers)
        typer.echo(f"worker process {os.getpid()}: stopped; delivered {delivered} event(s)")
    finally:
        reg.close()


def _worker_process(options: dict[str, Any]) -> None:
    """One process of `registry worker --processes N`: the single-process worker."""
    worker(**options)


def _run_processes(n: int, options: dict[str, Any]) -> None:
    """Start `n` worker processes (spawned: each opens its own registry and engine; events are
    shared out by FOR UPDATE SKIP LOCKED), start again one that dies, stop them all on
    SIGTERM or Ctrl-C."""
    import multiprocessing

    reg = _open(
        options["database_url"], options["data_dir"], options["schemas"],
        options["no_default_schemas"],
    )  # fmt: skip
    dialect = reg.db.dialect
    reg.close()
    if dialect != "postgresql":
        typer.secho(
            "error: more than one worker process needs PostgreSQL (SQLite has one writer, and "
            "the server runs its worker itself); set --database-url",
            fg="red",
            err=True,
        )
        raise typer.Exit(2)
    ctx = multiprocessing.get_context("spawn")
    stop = threading.Event()

    def start(i: int) -> Any:
        proc = ctx.Process(target=_worker_process, args=(options,), name=f"registry-worker-{i}")
        proc.start()
        return proc

    def _stop(*_args: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    procs = [start(i) for i in range(n)]
    typer.echo(f"{n} worker processes ({options['threads']} thread(s) each); Ctrl-C to stop")
    try:
        while not stop.wait(1.0):
            for i, proc in enumerate(procs):
                if proc.exitcode is not None:
                    typer.secho(
                        f"worker process {i} ended ({proc.exitcode}); starting it again",
                        fg="yellow",
                        err=True,
                    )
                    procs[i] = start(i)
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()  # SIGTERM: each finishes its batch and stops
        for proc in procs:
            proc.join(timeout=60)


def outbox_status(
    retry_dead: Annotated[
        bool, typer.Option("--retry-dead", help="Queue dead events again, due now")
    ] = False,
    database_url: DatabaseOpt = None,
    data_dir: DataDirOpt = None,
    schemas: SchemasOpt = None,
    no_default_schemas: NoDefaultOpt = False,
) -> None:
    """Show outbox events and deliveries by status (pending, done, dead); retry the dead ones.

    Examples:

      registry outbox

      registry outbox --retry-dead
    """
    reg = _open(database_url, data_dir, schemas, no_default_schemas)
    try:
        if retry_dead:
            typer.echo(f"queued {outbox.retry_dead(reg)} dead event(s) again")
            typer.echo(f"queued {deliveries.retry(reg)} dead delivery(ies) again")
        events = sorted(outbox.counts(reg).items())
        if not events:
            typer.echo("no outbox events")
        echo_table(("EVENTS", "COUNT"), events)
        sends = sorted(deliveries.counts(reg).items())
        if sends:
            typer.echo("")
            echo_table(("DELIVERIES", "COUNT"), sends)
    finally:
        reg.close()


def register(app: typer.Typer) -> None:
    app.command()(plugins)
    app.command()(worker)
    app.command("outbox")(outbox_status)
