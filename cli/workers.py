"""`registry plugins`, `registry worker`, `registry outbox`: plugins and follow-up work."""

from __future__ import annotations

import signal
import threading
from typing import Annotated, Any

import typer

from open_registry.cli.options import DatabaseOpt, DataDirOpt, NoDefaultOpt, SchemasOpt, open_from
from open_registry.core.app import Registry
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
        for p in describe(reg.pm):
            typer.echo(f"{p['name']:<28} {p['origin']:<28} {', '.join(p['hooks'])}")
    finally:
        reg.close()


def worker(
    threads: Annotated[int, typer.Option(help="Worker threads in this process")] = 1,
    once: Annotated[bool, typer.Option("--once", help="Deliver what is due, then exit")] = False,
    poll: Annotated[float, typer.Option(help="Seconds to wait when nothing is due")] = 1.0,
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

      registry worker --once            # deliver what is due (cron, tests)
    """
    reg = _open(database_url, data_dir, schemas, no_default_schemas)
    try:
        if once:
            once_worker = outbox.Worker(reg, name="worker-once")
            n = once_worker.run_once(limit=1_000_000)
            typer.echo(f"delivered {n} event(s)")
            sent = once_worker.send_due(limit=1_000_000)
            if sent:
                typer.echo(f"attempted {sent} delivery(ies)")
            return
        workers = [outbox.Worker(reg, name=f"worker-{i}") for i in range(threads)]
        stop = threading.Event()

        def _stop(*_args: Any) -> None:
            stop.set()
            for w in workers:
                w.stop()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        for w in workers:
            w.start_thread(poll)
        typer.echo(f"{threads} worker thread(s) delivering; Ctrl-C to stop")
        stop.wait()
    finally:
        reg.close()


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
        for status, n in sorted(outbox.counts(reg).items()):
            typer.echo(f"{status:<10} {n}")
        sends = deliveries.counts(reg)
        if sends:
            typer.echo("deliveries:")
            for status, n in sorted(sends.items()):
                typer.echo(f"  {status:<10} {n}")
    finally:
        reg.close()


def register(app: typer.Typer) -> None:
    app.command()(plugins)
    app.command()(worker)
    app.command("outbox")(outbox_status)
