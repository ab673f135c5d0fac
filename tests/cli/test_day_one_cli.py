"""Day one (issue 16) on the command line: the `base_url` warning and `--verbose` of `registry
serve`, DIVOC's schema folder in one command, `registry verify` outside a registry, header rows
of the lists, the `--where` help, `registry purge`."""

from __future__ import annotations

import json
import logging.config
import os
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from typer.testing import CliRunner

from open_registry.cli.main import app, with_plugin_commands
from open_registry.cli.startup import DEFAULT_BASE_URL, base_url_warning, schema_hint
from open_registry.cli.tables import table_lines
from open_registry.core import Settings
from open_registry.core.app import open_registry
from tests.conftest import FIXTURES
from tests.registry.test_day_one import FACILITY

runner = CliRunner(env={"COLUMNS": "120", "NO_COLOR": "1", "TERM": "dumb"})
DIVOC = FIXTURES / "divoc" / "registry"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """SQLite only: the commands are the same on both databases (the record service's purge
    is tested on both in tests/registry/test_day_one.py)."""
    return Settings(database_url=f"sqlite:///{tmp_path / 'registry.db'}",
                    data_dir=tmp_path / "data", load_entrypoints=False, inline_worker=False,
                    sqlite_synchronous="NORMAL")  # fmt: skip


@pytest.fixture
def serving(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[dict[str, Any]]:
    """`registry serve` up to uvicorn (not started), in `tmp_path`, leaving the process as it
    was: its logging configuration and the environment it hands to uvicorn's workers."""
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: calls.append(kw))
    monkeypatch.setattr(os, "environ", {
        k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")
    })  # fmt: skip
    monkeypatch.chdir(tmp_path)
    return calls


def run(*args: Any) -> Any:
    return runner.invoke(with_plugin_commands(third_party=False), [str(a) for a in args])


# -- registry serve ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("host", "port", "certificates", "warned"),
    [
        ("127.0.0.1", 8000, {}, False),
        ("localhost", 8000, {}, False),
        ("127.0.0.1", 9000, {}, True),
        ("0.0.0.0", 8000, {}, True),
        ("0.0.0.0", 8000, {"base_url": "https://registry.example.org"}, False),
        ("0.0.0.0", 8000, {"base_url": DEFAULT_BASE_URL + "/"}, True),
        ("0.0.0.0", 8000, {"enabled": "false"}, False),
    ],
)
def test_base_url_warning_when_serving_elsewhere_with_the_default(
    host: str, port: int, certificates: dict[str, str], warned: bool, tmp_path: Path
):
    settings = Settings(data_dir=tmp_path, plugins={"certificates": certificates})
    warning = base_url_warning(settings, host, port)
    assert (warning is not None) == warned
    if warning:
        assert warning.startswith("warning: base_url is left at http://localhost:8000")
        assert f"{host}:{port}" in warning and "[plugins.certificates]" in warning
        assert "REGISTRY_PLUGINS__CERTIFICATES__BASE_URL" in warning
    no_certificates = settings.with_(default_schemas=False)  # no certificates issued
    assert base_url_warning(no_certificates, host, port) is None


def test_serve_warns_on_stderr_and_verbose_brings_back_alembic_info(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, serving: list[dict[str, Any]]
):
    configs: list[dict[str, Any]] = []
    monkeypatch.setattr(logging.config, "dictConfig", configs.append)
    common = ["serve", "--data-dir", tmp_path / "data", "-s", DIVOC, "--no-default-schemas"]
    quiet = run(*common, "--port", 9100)
    assert quiet.exit_code == 0, quiet.output
    assert "Registry on http://127.0.0.1:9100" in quiet.stdout
    assert "base_url" not in quiet.output  # DIVOC's entities alone: no certificates
    loud = run(*common, "--verbose")
    assert loud.exit_code == 0, loud.output
    assert [c["loggers"]["alembic"]["level"] for c in configs] == ["WARNING", "INFO"]
    assert [c["port"] for c in serving] == [9100, 8000]
    help_text = " ".join(run("serve", "--help").output.replace("│", " ").split())
    assert "--verbose" in help_text and "Alembic's INFO lines" in help_text
    assert "[plugins.certificates]" in help_text  # the bracket survives rich's markup


def test_serve_with_the_shipped_schemas_warns_about_base_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, serving: Any
):
    monkeypatch.setattr(logging.config, "dictConfig", lambda config: None)
    out = run("serve", "--data-dir", tmp_path / "data", "--host", "0.0.0.0")
    assert out.exit_code == 0, out.output
    (line,) = [x for x in out.stderr.splitlines() if "base_url" in x]
    assert "0.0.0.0:8000" in line and "signed into every certificate" in line


def test_divoc_folder_with_the_shipped_schemas_gets_a_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, serving: Any
):
    monkeypatch.setattr(logging.config, "dictConfig", lambda config: None)
    out = run("serve", "--data-dir", tmp_path / "data", "-s", DIVOC)
    assert out.exit_code == 1
    assert "already taken by 'facility'" in out.stderr and "--no-default-schemas" in out.stderr
    checked = run("schema", "check", "--with-defaults", DIVOC)
    assert checked.exit_code == 1 and "--no-default-schemas" in checked.stderr
    assert schema_hint("entity 'X' needs table 'x', already taken by 'y'", True) is None


# -- registry verify outside a registry -----------------------------------------------------
def test_verify_outside_a_registry_creates_nothing_and_says_what_it_needs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    for name in ("REGISTRY_DATABASE_URL", "REGISTRY_DATA_DIR", "REGISTRY_SETTINGS"):
        monkeypatch.delenv(name, raising=False)
    cert = tmp_path / "certificate.json"
    cert.write_text(
        (FIXTURES / "divoc" / "certificates" / "ed25519-signed-sample.extracted.json").read_text()
    )
    monkeypatch.chdir(tmp_path)
    out = run("verify", cert)
    assert out.exit_code == 2, out.output
    assert "no registry here" in out.stderr
    assert "--data-dir" in out.stderr and "--database-url" in out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["certificate.json"]  # no data/, keys
    elsewhere = run("verify", cert, "--data-dir", tmp_path / "nowhere")
    assert elsewhere.exit_code == 2 and not (tmp_path / "nowhere").exists()


# -- lists and help -------------------------------------------------------------------------
def test_table_lines_have_a_header_and_aligned_columns():
    lines = table_lines(
        ("NAME", "ROLES", "NOTE"), [("asha", "system-admin", None), ("b", "x", "y")]
    )
    assert lines == ["NAME  ROLES         NOTE", "asha  system-admin  -", "b     x             y"]
    assert table_lines(("A",), []) == []


def test_lists_have_header_rows(settings: Settings, tmp_path: Path):
    db = ["--database-url", settings.sqlalchemy_url, "--data-dir", settings.data_dir]
    reg = open_registry(settings)
    try:
        reg.auth.users.add("asha", roles=["system-admin"], password="a long password 1", actor="t")
        reg.services["facility"].create(dict(FACILITY), actor="t")  # an outbox event
    finally:
        reg.close()
    users = run("user", "list", *db)
    assert users.exit_code == 0, users.output
    header, row = users.stdout.splitlines()
    assert header.split() == ["USERNAME", "ROLES", "FACILITY", "SIGN-IN", "BY", "STATE"]
    assert row.split() == ["asha", "system-admin", "-", "password", "active"]
    assert run("client", "add", "--name", "his", *db).exit_code == 0
    clients = run("client", "list", *db).stdout.splitlines()
    assert clients[0].split()[:3] == ["CLIENT", "ID", "ROLES"] and len(clients) == 2
    plugins = run("plugins", *db).stdout.splitlines()
    assert plugins[0].split() == ["PLUGIN", "FROM", "HOOKS"]
    outbox = run("outbox", *db).stdout.splitlines()
    assert outbox[0].split() == ["EVENTS", "COUNT"] and outbox[1].split() == ["pending", "1"]


def test_where_help_shows_the_operator_syntax():
    text = " ".join(run("export", "--help").output.replace("│", " ").split())
    assert "field[op]=value" in text
    assert "icontains" in text and "between" in text
    assert "dob[gte]=1960-01-01" in text  # the examples keep their brackets too


# -- registry purge -------------------------------------------------------------------------
def test_purge_command_removes_a_soft_deleted_record(settings: Settings):
    db = ["--database-url", settings.sqlalchemy_url, "--data-dir", settings.data_dir]
    reg = open_registry(settings)
    try:
        service = reg.services["facility"]
        rid = service.create(json.loads(json.dumps(FACILITY)), actor="t")["id"]
        service.delete(rid, actor="t")
    finally:
        reg.close()
    declined = runner.invoke(with_plugin_commands(False), ["purge", "facility", rid, *map(str, db)],
                             input="n\n")  # fmt: skip
    assert declined.exit_code == 1 and "not purged" in declined.output
    done = run("purge", "facility", rid, "--yes", *db)
    assert done.exit_code == 0 and f"purged facility {rid}" in done.output
    again = run("purge", "facility", rid, "--yes", *db)
    assert again.exit_code == 1 and "no facility with id" in again.output
    audit = run("audit", "list", "--record", rid, *db).stdout
    assert "purge" in audit and audit.splitlines()[0].startswith("SEQ")
    assert run("audit", "verify", *db).exit_code == 0
    unknown = run("purge", "nothing", rid, "--yes", *db)
    assert unknown.exit_code == 2 and "no entity 'nothing'" in unknown.output


def test_app_is_the_registry_command():
    assert app.info.name == "registry"
