"""Signed checkpoints over the audit chains: every kind of tampering (edit, delete, reorder,
truncate, fork, and the checkpoints' own) is found and named on SQLite and PostgreSQL, including
the truncations and forks that rewrite the head rows too, which the chains alone cannot see;
and two writer processes on PostgreSQL never wait on one row (no global lock in the write path).
"""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from open_registry.cli.main import app
from open_registry.core.audit import chain, checkpoint, keys
from open_registry.core.audit.chain import GENESIS
from open_registry.core.outbox.worker import Worker
from tests.registry.test_api import demo_record

KEY = keys.AuditKey.of_private(Ed25519PrivateKey.generate())
OTHER = keys.AuditKey.of_private(Ed25519PrivateKey.generate())


def write(registry: Any, n: int, tag: str) -> None:
    """`n` records written one after the other (one chain: a lone writer keeps its head)."""
    svc = registry.services["vaccine"]
    for j in range(n):
        body = demo_record("vaccine")
        body.update(code=f"{body['code']}-{tag}-{j}", name=f"{body['name']} {tag}-{j}")
        svc.create(body, actor="writer")


def rows_of(conn: Any) -> list[dict[str, Any]]:
    return [dict(r) for r in conn.execute(sa.text("SELECT * FROM registry_audit ORDER BY seq"))
            .mappings()]  # fmt: skip


def longest_chain(registry: Any) -> list[dict[str, Any]]:
    """The longest chain, in order (following prev_hash)."""
    with registry.db.engine.connect() as conn:
        rows = rows_of(conn)
    after = {r["prev_hash"]: r for r in rows if r["prev_hash"] != GENESIS}
    best: list[dict[str, Any]] = []
    for first in (r for r in rows if r["prev_hash"] == GENESIS):
        links = [first]
        while links[-1]["hash"] in after:
            links.append(after[links[-1]["hash"]])
        best = max(best, links, key=len)
    return best


def rehash(row: dict[str, Any], prev: str) -> str:
    fields = row["fields"]
    if isinstance(fields, str):
        fields = orjson.loads(fields)
    return chain.entry_hash(
        prev,
        chain.at_text(chain._at(row["at"])),
        row["actor"],
        row["action"],
        row["entity"],
        row["record_id"],
        row["version"],
        chain.fields_json(fields),
    )


def set_head(conn: Any, old_hash: str, entries: int, new_hash: str) -> None:
    conn.execute(
        sa.text("UPDATE registry_audit_head SET entries = :n, hash = :h WHERE hash = :old"),
        {"n": entries, "h": new_hash, "old": old_hash},
    )


@pytest.fixture
def logged(registry: Any) -> Any:
    """A registry with a chain of 10+ entries, two checkpoints (after 6 and after 10 writes)."""
    write(registry, 6, "a")
    assert checkpoint.record(registry.db.engine, KEY) is not None
    write(registry, 4, "b")
    assert checkpoint.record(registry.db.engine, KEY) is not None
    return registry


def test_checkpoints_are_signed_chained_and_verified(logged: Any):
    engine = logged.db.engine
    verdict = checkpoint.verify(engine, [KEY])
    assert verdict.ok, verdict
    assert verdict.checkpoints == 2
    with engine.connect() as conn:
        last = checkpoint.latest(conn)
    assert last is not None and verdict.checkpoint_hash == last.hash
    assert last.key_id == KEY.id and KEY.verifies(checkpoint.signed_message(last.hash),
                                                  last.signature)  # fmt: skip
    # nothing moved: no new checkpoint; a younger one than the interval: none either
    assert checkpoint.record(engine, KEY) is None
    write(logged, 1, "c")
    assert checkpoint.record(engine, KEY, min_interval=3600) is None
    assert checkpoint.record(engine, KEY) is not None
    assert checkpoint.verify(engine, [KEY]).checkpoints == 3


@pytest.mark.parametrize("tamper", ["edit", "delete", "reorder", "truncate", "fork"])
def test_tampering_is_found_and_named(logged: Any, tamper: str):
    engine = logged.db.engine
    links = longest_chain(logged)
    assert len(links) >= 10
    victim = links[3]  # checkpointed by both checkpoints
    named: int | None = victim["seq"]
    with engine.begin() as conn:
        if tamper == "edit":
            conn.execute(sa.text("UPDATE registry_audit SET actor = 'forger' WHERE seq = :s"),
                         {"s": victim["seq"]})  # fmt: skip
        elif tamper == "delete":
            conn.execute(sa.text("DELETE FROM registry_audit WHERE seq = :s"), {"s": victim["seq"]})
            named = links[4]["seq"]
        elif tamper == "reorder":  # entries 4 and 5 of the chain swap places in the log
            a, b = links[3]["seq"], links[4]["seq"]
            for old, new in ((a, -1), (b, a), (-1, b)):
                conn.execute(sa.text("UPDATE registry_audit SET seq = :n WHERE seq = :o"),
                             {"n": new, "o": old})  # fmt: skip
        elif tamper == "truncate":  # the last 3 entries cut, and the head row set to match
            for row in links[-3:]:
                conn.execute(sa.text("DELETE FROM registry_audit WHERE seq = :s"),
                             {"s": row["seq"]})  # fmt: skip
            set_head(conn, links[-1]["hash"], len(links) - 3, links[-4]["hash"])
            named = links[-4]["seq"] + 1
        else:  # fork: entry 4 edited, it and every later entry re-hashed, the head set to match
            prev = links[2]["hash"]
            for i, row in enumerate(links[3:]):
                if i == 0:
                    row = {**row, "actor": "forger"}
                new = rehash(row, prev)
                conn.execute(
                    sa.text("UPDATE registry_audit SET actor = :a, prev_hash = :p, hash = :h "
                            "WHERE seq = :s"),
                    {"a": row["actor"], "p": prev, "h": new, "s": row["seq"]},
                )  # fmt: skip
                prev = new
            set_head(conn, links[-1]["hash"], len(links), prev)
            named = links[5]["seq"]  # entry 6: the first one a checkpoint signed
    if tamper in ("truncate", "fork"):  # the chains alone cannot tell: the heads match
        assert chain.verify(engine).ok
    verdict = checkpoint.verify(engine, [KEY])
    assert not verdict.ok
    assert verdict.broken_seq == named, verdict
    word = {"edit": "edited", "delete": "deleted", "reorder": "reordered",
            "truncate": "truncated", "fork": "fork"}[tamper]  # fmt: skip
    assert word in verdict.reason, verdict


@pytest.mark.parametrize("tamper", ["edit", "delete", "key", "unknown-key", "behind"])
def test_tampered_checkpoints_are_found_and_named(logged: Any, tamper: str):
    engine = logged.db.engine
    with engine.begin() as conn:
        first, second = (r[0] for r in conn.execute(
            sa.text("SELECT seq FROM registry_audit_checkpoint ORDER BY seq")))  # fmt: skip
        if tamper == "edit":
            conn.execute(sa.text("UPDATE registry_audit_checkpoint SET at = :a WHERE seq = :s"),
                         {"a": "2020-01-01T00:00:00.000000Z", "s": second})  # fmt: skip
        elif tamper == "delete":  # the first one: the second then follows nothing
            conn.execute(sa.text("DELETE FROM registry_audit_checkpoint WHERE seq = :s"),
                         {"s": first})  # fmt: skip
    trusted = [OTHER] if tamper == "unknown-key" else [KEY]
    if tamper == "key":  # re-signed by another key, with its id: the signature is not ours
        with engine.begin() as conn:
            h = conn.execute(sa.text("SELECT hash FROM registry_audit_checkpoint WHERE seq = :s"),
                             {"s": second}).scalar()  # fmt: skip
            conn.execute(
                sa.text("UPDATE registry_audit_checkpoint SET signature = :g WHERE seq = :s"),
                {"g": OTHER.sign(checkpoint.signed_message(h)), "s": second},
            )
    if tamper == "behind":  # a head cut back, then a (genuinely signed) checkpoint of it
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE registry_audit_head SET entries = entries - 1 "
                                 "WHERE entries > 0"))  # fmt: skip
        assert checkpoint.record(engine, KEY) is not None
    verdict = checkpoint.verify(engine, trusted)
    assert not verdict.ok and verdict.broken_checkpoint is not None, verdict
    expected = {
        "edit": (second, "edited"),
        "delete": (second, "deleted"),
        "key": (second, "does not verify"),
        "unknown-key": (first, "not a trusted audit key"),
        "behind": (second + 1, "behind checkpoint"),
    }[tamper]
    assert (verdict.broken_checkpoint, expected[1] in verdict.reason) == (expected[0], True), (
        verdict
    )


def test_the_worker_signs_a_checkpoint_at_most_once_per_interval(registry: Any, tmp_path: Path):
    worker = Worker(registry, checkpoint_seconds=0.001)
    write(registry, 2, "w")
    worker._checkpointed -= 1  # its interval has passed
    assert worker.checkpoint_due()
    assert not worker.checkpoint_due()  # the interval has not passed again
    worker._checkpointed -= 1
    assert not worker.checkpoint_due()  # no chain moved
    key = keys.signing_key(registry.settings.data_dir, create=False)
    assert (registry.settings.data_dir / keys.KEY_FILE_NAME).stat().st_mode & 0o077 == 0
    assert checkpoint.verify(registry.db.engine, [key]).checkpoints == 1
    assert Worker(registry, checkpoint_seconds=0).checkpoint_due() is False


def test_the_cli_verifies_signs_and_gives_the_public_key(registry: Any, tmp_path: Path):
    write(registry, 3, "cli")
    url = registry.db.engine.url.render_as_string(hide_password=False)
    db = ["--database-url", url, "--data-dir", str(registry.settings.data_dir)]
    runner = CliRunner()
    first = runner.invoke(app, ["audit", "verify", *db])
    assert first.exit_code == 0, first.output
    assert "0 signed checkpoints verified; new checkpoint 1:" in first.output
    made = runner.invoke(app, ["audit", "checkpoint", *db])
    assert made.exit_code == 0 and "checkpoint 2 signed by key" in made.output, made.output
    pem = runner.invoke(app, ["audit", "public-key", "--data-dir", str(registry.settings.data_dir)])
    assert pem.exit_code == 0 and pem.output.startswith("-----BEGIN PUBLIC KEY-----")
    public = tmp_path / "audit-public.pem"
    public.write_text(pem.output)
    elsewhere = ["--database-url", url, "--data-dir", str(tmp_path / "auditor")]
    audit = runner.invoke(app, ["audit", "verify", "--no-checkpoint", "--public-key", public,
                                *elsewhere])  # fmt: skip
    assert audit.exit_code == 0 and "2 signed checkpoints verified" in audit.output, audit.output
    untrusted = runner.invoke(app, ["audit", "verify", "--no-checkpoint", *elsewhere])
    assert untrusted.exit_code == 1
    assert "BROKEN at checkpoint 1" in untrusted.output and "not a trusted" in untrusted.output
    missing = runner.invoke(app, ["audit", "verify", "--public-key", tmp_path / "nope.pem", *db])
    assert missing.exit_code == 2 and "nope.pem" in missing.output


# -- no global lock: two writer processes on PostgreSQL --------------------------------------
WRITER = r"""
import sys
import sqlalchemy as sa
from open_registry.core import storage
from open_registry.core.codec import utcnow
from open_registry.core.events import Change
from open_registry.core.writes import record

engine = sa.create_engine(sys.argv[1])
for n, line in enumerate(sys.stdin):
    if line.strip() != "write":
        break
    with storage.write(engine) as conn:
        print(conn.execute(sa.text("SELECT pg_backend_pid()")).scalar(), flush=True)
        change = Change("vaccine", "create", f"{sys.argv[2]}-{n}", 1, ["name"], "w", utcnow())
        record(conn, [change])  # the outbox event and the audit entry, as every write leaves
        print("written", flush=True)
        sys.stdin.readline()  # hold the transaction (and its chain head) open until told
    print("committed", flush=True)
"""


class Writers:
    """Two writer processes (started once) that, each round, write a record's audit entry and
    outbox event in a transaction they keep open until told to commit."""

    def __init__(self, url: str, admin: sa.Engine):
        self.admin = admin
        self.procs = [
            subprocess.Popen([sys.executable, "-c", WRITER, url, f"rec-{i}"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            for i in range(2)
        ]  # fmt: skip
        # one reader thread per writer: a selector on buffered pipes misses a second line that
        # arrived with the first (it sits in the reader's buffer, the pipe says nothing more)
        self.lines: queue.Queue[tuple[int, str]] = queue.Queue()
        self.readers = [
            threading.Thread(target=self._read, args=(i, p), daemon=True)
            for i, p in enumerate(self.procs)
        ]
        for reader in self.readers:
            reader.start()

    def _read(self, i: int, p: subprocess.Popen[str]) -> None:
        assert p.stdout is not None
        with p.stdout:  # closed at the writer's end
            for line in p.stdout:
                self.lines.put((i, line.strip()))

    def _next(self, deadline: float) -> tuple[int, str] | None:
        try:
            return self.lines.get(timeout=max(0.0, min(0.05, deadline - time.monotonic())))
        except queue.Empty:
            return None

    def _say(self, p: subprocess.Popen[str], line: str) -> None:
        assert p.stdin is not None
        p.stdin.write(line + "\n")
        p.stdin.flush()

    def _blocked(self, ours: set[int]) -> list[str]:
        with self.admin.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT pid, pg_blocking_pids(pid) FROM pg_stat_activity "
                        "WHERE pid = ANY(:p)"), {"p": sorted(ours)})  # fmt: skip
            return [f"backend {pid} waits on {sorted(b)}" for pid, b in rows if set(b) & ours]

    def round(self, timeout: float = 60) -> list[str]:
        """Both write at once; the lock waits seen between them ([] when both wrote while the
        other held its transaction open). Both commit at the end."""
        for p in self.procs:
            self._say(p, "write")
        backend: dict[Any, int] = {}
        written: set[Any] = set()
        waits: list[str] = []
        deadline = time.monotonic() + timeout
        while len(written) < 2 and not waits and time.monotonic() < deadline:
            got = self._next(deadline)
            if got and got[1] == "written":
                written.add(got[0])
            elif got and got[1].isdigit():
                backend[got[0]] = int(got[1])
            if len(backend) == 2:
                waits = self._blocked(set(backend.values()))
        assert waits or len(written) == 2, "a writer neither wrote nor waited"
        committed = 0
        for p in self.procs:  # commit, one after the other (a waiting one then goes on)
            self._say(p, "")
        while committed < 2 and time.monotonic() < deadline:
            got = self._next(deadline)
            committed += bool(got and got[1] == "committed")
        assert committed == 2, "the writers did not both commit"
        return waits

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                self._say(p, "stop")
            assert p.stdin is not None
            p.stdin.close()
            p.wait(timeout=60)  # its output is its reader thread's (not communicate's too)
        for reader in self.readers:
            reader.join(timeout=10)


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # one writer on SQLite
def test_two_writer_processes_never_wait_on_one_row(registry: Any):
    engine = registry.db.engine
    writers = Writers(engine.url.render_as_string(hide_password=False), engine)
    try:
        assert writers.round() == []
        with engine.connect() as conn:
            heads = conn.execute(sa.text("SELECT count(*) FROM registry_audit_head")).scalar()
        assert heads and heads > 1
        assert chain.verify(engine).ok
        # the same test sees a global lock: with one chain head the second writer waits
        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM registry_audit_head WHERE id > 1"))
        waits = writers.round()
        assert waits and "waits on" in waits[0]
    finally:
        writers.close()
