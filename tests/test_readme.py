"""Every shell block of README.md runs as written, against real servers on SQLite (and PostgreSQL).

What "as written" means here, and the few rewrites (nothing else of a block is changed):

* Blocks are the fenced `bash`, `sh`, `shell` and `console` blocks (of a `console` block, the
  lines after a `$ ` prompt), grouped by their `## ` section. Each section runs in a fresh
  temporary folder laid out like a checkout: the repository files a block names (such as
  `tests/fixtures/schemas/...`) are copied there under the same path. A section whose text starts
  "With `registry serve ...` running" continues in the previous section's folder, with its server.
  Each block is one `bash -e -o pipefail` run started in that folder, like one terminal.
* The venv is the installation: `python3 -m venv .venv`, `. .venv/bin/activate` and `pip install
  ...` steps of a `&&` chain are dropped, and the venv running this test (the project installed
  editable) comes first on PATH. A block whose command is then `pytest` (the Quick start's test
  command) is skipped: this test is part of that run.
* `registry serve ...` starts in the background on a free loopback port (`--port N` added, the
  one change to the command) and the block goes on once `/health` answers; `localhost:8000` and
  `127.0.0.1:8000` in the lines after it name that port. A server stops when the next
  `registry serve` of its folder starts (as Ctrl-C would) or when its folder's sections end.
* `curl` lines run as written, through a wrapper that adds `--fail-with-body`: an HTTP error fails
  the block (its body still printed), where plain `curl -s` would hide it.
* The PostgreSQL block (one naming `postgresql://`) runs against the server on 127.0.0.1:5432 (user
  postgres, trust authentication), the database name `registry` replaced by a throwaway one that
  is dropped afterwards; it is skipped when no server answers (an error with CI=true, as in
  tests/conftest.py).

A block fails the test when it exits non-zero, when a server it starts does not answer or has
workers killed while starting, when a `--demo` start-up does not end with its `Demo sign-in` line
(no Alembic INFO lines anywhere), or when the certificate listing lists no credential. Each
group prints how many blocks it ran and skipped, and why.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import sqlalchemy as sa

ROOT = Path(__file__).parents[1]
README = ROOT / "README.md"
SHELLS = ("bash", "sh", "shell", "console")
#: the installation steps the venv stands for
INSTALL = re.compile(
    r"^\s*(python3? -m venv\b|\. \.venv/bin/activate\b|source \.venv/bin/activate\b"
    r"|(python3? -m )?pip install\b)"
)
SERVE = re.compile(r"^(\s*)((?:[A-Za-z_][A-Za-z0-9_]*=\S*\s+)*)(registry\s+serve\b)(.*)$", re.S)
DEFAULT_PORT = re.compile(r"\b(localhost|127\.0\.0\.1):8000\b")
#: what a block's output must hold besides its exit status: (text in the block, text expected)
EXPECTED = [("/api/v1/certificate?recipient=", '"credential"')]
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
#: lines of the outbox worker, which delivers in the background from start-up on
DELIVERY_LINES = ("INFO registry.programme: programme notice ",)
SERVE_TIMEOUT = 180  # s until /health answers (4 workers on 2 busy cores are slow to start)
BLOCK_TIMEOUT = 600

PRELUDE = r"""
set -e -o pipefail
_readme_alive() { [ -e "/proc/$1" ] && ! grep -q '^[0-9]* (.*) Z' "/proc/$1/stat" 2>/dev/null; }
_readme_stop() {  # the last server started in this folder, as Ctrl-C would
  [ -s "$README_SERVERS" ] || return 0
  local pid; pid=$(tail -n 1 "$README_SERVERS" | cut -d' ' -f1)
  _readme_alive "$pid" || return 0
  kill -TERM -- "-$pid" 2>/dev/null || return 0
  for _ in $(seq 1 200); do _readme_alive "$pid" || return 0; sleep 0.1; done
  kill -KILL -- "-$pid" 2>/dev/null || true
}
_serve() {  # _serve PORT [NAME=value ...] registry serve ...: runs until /health answers
  local port=$1 log="$README_LOGS/serve-$1.log" pid
  shift
  _readme_stop
  setsid env "$@" </dev/null >"$log" 2>&1 &
  pid=$!
  echo "$pid $port" >>"$README_SERVERS"
  for _ in $(seq 1 $((README_SERVE_TIMEOUT * 4))); do
    if "$README_CURL" -s -o /dev/null --max-time 2 "http://127.0.0.1:$port/health"; then
      return 0
    fi
    if ! _readme_alive "$pid"; then
      echo "readme test: '$*' exited before answering:" >&2; cat "$log" >&2; return 1
    fi
    sleep 0.25
  done
  echo "readme test: '$*' did not answer in ${README_SERVE_TIMEOUT} s" >&2; cat "$log" >&2
  return 1
}
"""


@dataclass
class Block:
    section: str
    number: int  # 1-based, in README order
    text: str

    @property
    def label(self) -> str:
        return f"block {self.number} ({self.section})"


@dataclass
class Group:
    """Sections that share a folder (and the servers started there)."""

    sections: list[str]
    blocks: list[Block] = field(default_factory=list)

    @property
    def id(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.sections[0].lower()).strip("-")

    @property
    def postgres(self) -> bool:
        return any("postgresql://" in b.text for b in self.blocks)


def parse_readme(text: str) -> list[Group]:
    """The shell blocks, grouped by the folder they run in."""
    groups: list[Group] = []
    section, prose, number = "(top)", "", 0
    lines = iter(text.splitlines())
    for line in lines:
        if line.startswith("## "):
            section, prose = line[3:].strip(), ""
            continue
        fence = re.match(r"^```(\w+)\s*$", line)
        if not fence:
            if line.startswith("```"):  # a block of another kind: skip to its end
                for inner in lines:
                    if inner.startswith("```"):
                        break
            else:
                prose += line + "\n"
            continue
        body: list[str] = []
        for inner in lines:
            if inner.startswith("```"):
                break
            body.append(inner)
        if fence.group(1) not in SHELLS:
            continue
        if fence.group(1) == "console":
            body = [b[2:] for b in body if b.startswith("$ ")]
        number += 1
        continues = bool(re.match(r"\s*With `registry serve[^`]*` running", prose))
        if not groups or (section not in groups[-1].sections and not continues):
            groups.append(Group([section]))
        elif section not in groups[-1].sections:
            groups[-1].sections.append(section)
        groups[-1].blocks.append(Block(section, number, "\n".join(body) + "\n"))
    return groups


GROUPS = parse_readme(README.read_text())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    port: int
    command: str


def rewrite(block: Block, port: int | None) -> tuple[str | None, str, int | None, list[Server]]:
    """(the script to run or None to skip, the reason or note, the port after it, servers)."""
    out: list[str] = []
    notes: list[str] = []
    servers: list[Server] = []
    for line in block.text.splitlines():
        parts = line.split(" && ")
        kept = []
        for part in parts:
            if INSTALL.match(part):
                notes.append(f"`{part.strip()}` -> the venv")
                continue
            if re.match(r"^\s*pytest\b", part):
                return None, "runs the test suite, which this test is part of", port, []
            serve = SERVE.match(part)
            if serve:
                port = free_port()
                indent, env, cmd, rest = serve.groups()
                rest = re.sub(r"\s--port[ =]\d+", "", rest)
                part = f"{indent}_serve {port} {env}{cmd} --port {port}{rest}"
                servers.append(Server(port, line.strip()))
            kept.append(part)
        if kept:
            text = " && ".join(kept)
            if port is not None:
                text = DEFAULT_PORT.sub(rf"\g<1>:{port}", text)
            out.append(text)
    return "\n".join(out) + "\n", "; ".join(notes), port, servers


def checkout(folder: Path, blocks: list[Block]) -> None:
    """The repository files the blocks name, copied under the same paths."""
    folder.mkdir()
    for block in blocks:
        try:
            words = shlex.split(block.text, comments=True)
        except ValueError:
            words = block.text.split()
        for word in words:
            path = ROOT / word
            if "/" in word and not word.startswith((".venv", "/")) and path.is_file():
                (folder / word).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(path, folder / word)


def pg_problem() -> str | None:
    try:
        engine = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        engine.dispose()
    except Exception as exc:
        return str(exc).splitlines()[0]
    if shutil.which("createdb") is None:
        return "createdb is not installed"
    return None


def drop_database(name: str) -> None:
    engine = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def stop(pid: int) -> None:
    """Stop a server this test started (its own process group, from `setsid`)."""
    if not alive(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def check_demo_start(log: str, command: str) -> None:
    """The sign-in is the last thing start-up says: after it only the address and uvicorn's
    own lines, and no Alembic INFO anywhere. The outbox worker starts with the app and delivers
    the demo's queued events meanwhile: its lines (a notice nobody is there to get) may come
    between uvicorn's, as they would at any later moment."""
    lines = log.splitlines()
    signin = [i for i, line in enumerate(lines) if line.startswith("Demo sign-in: demo-admin / ")]
    assert signin, f"`{command}` printed no `Demo sign-in` line:\n{log}"
    assert not [line for line in lines if line.startswith("INFO alembic")], log
    for line in lines[signin[-1] + 1 :]:
        if line.startswith("INFO registry.access") or "Uvicorn running on" in line:
            break
        if line.startswith(DELIVERY_LINES):
            continue
        assert line.startswith(("Registry on http", "INFO uvicorn")), (
            f"start-up goes on after the sign-in line ({line!r}):\n{log}"
        )


def block_env(tmp: Path, shim: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    venv_bin = Path(sys.executable).parent
    assert (venv_bin / "registry").exists(), f"no `registry` command in {venv_bin}"
    env["PATH"] = os.pathsep.join([str(shim), str(venv_bin), env.get("PATH", "")])
    env["VIRTUAL_ENV"] = str(venv_bin.parent)
    env["README_LOGS"] = str(tmp / "logs")
    env["README_SERVERS"] = str(tmp / "servers")
    env["README_SERVE_TIMEOUT"] = str(SERVE_TIMEOUT)
    real_curl = shutil.which("curl")
    assert real_curl, "curl is not installed"
    env["README_CURL"] = real_curl
    return env


def curl_shim(folder: Path, real_curl: str) -> Path:
    folder.mkdir()
    shim = folder / "curl"
    shim.write_text(f'#!/bin/sh\nexec {shlex.quote(real_curl)} --fail-with-body "$@"\n')
    shim.chmod(0o755)
    return folder


def test_a_project_made_by_registry_init_records_vaccinations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """The README's "A project of your own": the certificates' and programme's entities are
    served too, next to the project's editable copies of the shipped ones."""
    from typer.testing import CliRunner

    from open_registry.cli.main import app
    from open_registry.core import Settings
    from open_registry.core.app import open_registry

    made = CliRunner().invoke(app, ["init", str(tmp_path / "proj")])
    assert made.exit_code == 0, made.output
    monkeypatch.chdir(tmp_path / "proj")
    for name in list(os.environ):
        if name.startswith("REGISTRY_"):
            monkeypatch.delenv(name)
    reg = open_registry(Settings.load())
    try:
        assert {"vaccination", "certificate", "facility_programme"} <= set(reg.services)
        assert reg.schemas["facility"].source.startswith(str(tmp_path / "proj" / "schemas"))
    finally:
        reg.close()


def test_the_readme_has_the_blocks_this_test_runs():
    blocks = [b for g in GROUPS for b in g.blocks]
    assert len(blocks) >= 6, [b.label for b in blocks]
    quick = next(g for g in GROUPS if g.sections[0] == "Quick start")
    # the Quick start's two commands: the product on SQLite with demo data, and the tests
    assert len(quick.blocks[0].text.strip().splitlines()) == 1, quick.blocks[0].text
    assert quick.blocks[0].text.strip().endswith("registry serve --demo")
    assert quick.blocks[1].text.strip().endswith("pip install -e '.[test]' && pytest")
    # the walk-through runs against the Quick start's server, in its folder
    assert "Record a vaccination, get a certificate" in quick.sections
    assert sum(g.postgres for g in GROUPS) == 1


@pytest.mark.parametrize(
    "group",
    [pytest.param(g, id=g.id, marks=[pytest.mark.postgres] if g.postgres else []) for g in GROUPS],
)
def test_readme_blocks_run_as_written(
    group: Group, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    started = time.monotonic()
    folder = tmp_path / "checkout"
    checkout(folder, group.blocks)
    (tmp_path / "logs").mkdir()
    env = block_env(tmp_path, tmp_path / "bin")
    curl_shim(tmp_path / "bin", env["README_CURL"])
    (tmp_path / "prelude.sh").write_text(PRELUDE)
    database = None
    if group.postgres:
        problem = pg_problem()
        if problem:
            if os.environ.get("CI"):
                pytest.fail(f"PostgreSQL is required in CI but not usable: {problem}")
            pytest.skip(f"PostgreSQL block skipped: {problem}")
        database = f"readme_{uuid.uuid4().hex[:10]}"
    ran: list[str] = []
    skipped: list[str] = []
    demo_servers: list[Server] = []
    port: int | None = None
    try:
        for block in group.blocks:
            text = block.text
            if database:
                text = text.replace("127.0.0.1/registry", f"127.0.0.1/{database}")
                text = re.sub(r"(createdb\b[^\n#]*\s)registry\b", rf"\g<1>{database}", text)
                assert database in text and "/registry" not in text, text
            script, note, port, servers = rewrite(Block(block.section, block.number, text), port)
            if script is None:
                skipped.append(f"{block.label}: {note}")
                continue
            demo_servers += [s for s in servers if "--demo" in s.command]
            path = tmp_path / f"block-{block.number}.sh"
            path.write_text(f'. "{tmp_path / "prelude.sh"}"\n{script}')
            result = subprocess.run(
                ["bash", str(path)],
                cwd=folder,
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=BLOCK_TIMEOUT,
            )
            assert result.returncode == 0, (
                f"README {block.label} failed (exit {result.returncode}):\n{block.text}\n"
                f"--- as run:\n{script}\n--- stdout:\n{result.stdout}\n--- stderr:\n"
                f"{result.stderr}{server_logs(tmp_path)}"
            )
            for needle, expected in EXPECTED:
                if needle in block.text:
                    assert expected in result.stdout, (
                        f"README {block.label}: no {expected} in its output:\n{result.stdout}"
                    )
            ran.append(block.label + (f" [{note}]" if note else ""))
        for server in demo_servers:
            check_demo_start((tmp_path / "logs" / f"serve-{server.port}.log").read_text(),
                             server.command)  # fmt: skip
    finally:
        servers_file = tmp_path / "servers"
        if servers_file.exists():
            for line in servers_file.read_text().splitlines():
                stop(int(line.split()[0]))
        if database:
            drop_database(database)
    for log in sorted((tmp_path / "logs").glob("serve-*.log")):
        # only while it served: the stop signals the whole process group (as Ctrl-C does), and
        # a worker that finishes before the parent hears of it is "died" to the parent
        serving = log.read_text().split("Shutting down")[0]
        killed = re.findall(r"^.*Child process .* died$", serving, re.M)
        assert not killed, f"{log.name}: workers killed while starting: {killed}"
    with capsys.disabled():
        print(
            f"\nREADME {group.id}: {len(ran)} block(s) run, {len(skipped)} skipped in "
            f"{time.monotonic() - started:.0f} s"
            + "".join(f"\n  run: {r}" for r in ran)
            + "".join(f"\n  skipped: {s}" for s in skipped)
        )


def server_logs(tmp_path: Path) -> str:
    logs = sorted((tmp_path / "logs").glob("serve-*.log"))
    return "".join(f"\n--- {p.name} (last lines):\n" + "\n".join(
        p.read_text().splitlines()[-40:]) for p in logs)  # fmt: skip
