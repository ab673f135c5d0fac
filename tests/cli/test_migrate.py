"""`registry migrate` and `registry init` on SQLite and PostgreSQL: additive changes keep every row,
destructive ones are refused (and reported) unless allowed, serve refuses a database behind."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from open_registry.cli.main import app
from open_registry.core import Settings, StartupError, create_app, migrations
from open_registry.core.app import open_registry
from open_registry.core.demo import load_demo_data
from tests.authn import admin_client

# the from-scratch path itself: no template copies
pytestmark = pytest.mark.fresh_migrations

runner = CliRunner()


@pytest.fixture
def project(tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project made by `registry init`, its database filled with demo data."""
    root = tmp_path / "proj"
    result = runner.invoke(app, ["init", str(root), "--title", "Examplia"])
    assert result.exit_code == 0, result.output
    monkeypatch.chdir(root)
    monkeypatch.setenv("REGISTRY_DATABASE_URL", database_url)
    reg = open_registry(Settings.load())
    load_demo_data(reg.services)
    reg.close()
    return root


def drop_field(doc: dict[str, Any], name: str) -> None:
    """What an implementer does to drop a field: its property and its translations."""
    doc["properties"].pop(name)
    for spec in doc.get("x-registry", {}).get("i18n", {}).values():
        spec.get("fields", {}).pop(name, None)


def edit_schema(root: Path, entity: str, change: Any) -> None:
    path = root / "schemas" / f"{entity}.json"
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc, indent=2))


def migrate(*args: str) -> Any:
    return runner.invoke(app, ["migrate", *args])


def rows(sql: str) -> list[Any]:
    reg = open_registry(Settings.load(), create_tables=False)
    try:
        with reg.db.engine.connect() as conn:
            return list(conn.execute(sa.text(sql)))
    finally:
        reg.close()


def test_init_makes_a_project_that_serves(project: Path):
    assert {p.name for p in (project / "schemas").iterdir()} == {
        "facility.json",
        "vaccinator.json",
        "vaccine.json",
        "program.json",
        "recipient.json",
    }
    assert (project / "migrations" / "env.py").exists()
    assert sorted(p.name for p in (project / "migrations" / "versions").glob("*.py")) == [
        "0001_baseline.py"
    ]
    assert "data/" in (project / ".gitignore").read_text()
    assert migrate("--check").exit_code == 0
    again = runner.invoke(app, ["init", str(project)])
    assert again.exit_code == 2 and "not empty" in again.output


def test_adding_a_field_keeps_every_row_and_the_field_works(project: Path):
    before = rows("SELECT id, name FROM facility ORDER BY id")
    edit_schema(
        project,
        "facility",
        lambda d: d["properties"].update(
            {"beds": {"type": "integer", "minimum": 0, "title": "Beds"}}
        ),
    )
    check = migrate("--check")
    assert check.exit_code == 1 and "add column facility: beds" in check.output
    with pytest.raises(StartupError, match="registry migrate"):
        open_registry(Settings.load())
    result = migrate("-m", "beds")
    assert result.exit_code == 0, result.output
    assert "0002_beds.py" in result.output
    assert rows("SELECT id, name FROM facility ORDER BY id") == before
    assert migrate("--check").exit_code == 0
    reg = open_registry(Settings.load())
    with admin_client(create_app(registry=reg)) as c:
        fac = c.get("/api/v1/facility", params={"limit": 1}).json()["items"][0]
        patched = c.patch(f"/api/v1/facility/{fac['id']}", json={"beds": 40})
        assert patched.status_code == 200 and patched.json()["beds"] == 40
        assert [
            r["id"] for r in c.get("/api/v1/facility", params={"beds[gte]": 40}).json()["items"]
        ] == [fac["id"]]
        assert c.patch(f"/api/v1/facility/{fac['id']}", json={"beds": -1}).status_code == 422
    reg.close()


def test_dropping_a_field_is_refused_then_reported_and_applied_when_allowed(project: Path):
    with_site = rows('SELECT count(*) FROM facility WHERE "websiteUrl" IS NOT NULL')[0][0]
    assert with_site > 0
    edit_schema(project, "facility", lambda d: drop_field(d, "websiteUrl"))
    refused = migrate()
    assert refused.exit_code == 1
    assert "DESTRUCTIVE drop column facility: websiteUrl" in refused.output
    assert f"{with_site} row(s) hold a value in websiteUrl" in refused.output
    assert "--allow-destructive" in refused.output
    assert len(rows("SELECT id FROM facility")) == 12  # nothing changed
    allowed = migrate("--allow-destructive")
    assert allowed.exit_code == 0, allowed.output
    assert f"{with_site} row(s) hold a value in websiteUrl" in allowed.output  # reported first
    assert len(rows("SELECT id FROM facility")) == 12
    # the unique key over live rows survived the table change
    reg = open_registry(Settings.load())
    with admin_client(create_app(registry=reg)) as c:
        fac = c.get("/api/v1/facility", params={"limit": 1}).json()["items"][0]
        body = {k: v for k, v in fac.items() if not k.startswith("_") and k != "id"}
        assert c.post("/api/v1/facility", json=body).status_code == 409
    reg.close()


def test_unique_key_that_rows_violate_is_refused(project: Path):
    edit_schema(project, "vaccinator", lambda d: d["x-registry"]["unique"].append("status"))
    result = migrate("--allow-destructive")
    assert result.exit_code == 1
    assert "add unique key vaccinator: (status)" in result.output
    assert "used by more than one record" in result.output


def test_required_field_missing_in_rows_and_narrowed_enum_are_reported(project: Path):
    def change(d: dict[str, Any]) -> None:
        d["required"].append("websiteUrl")
        d["properties"]["category"]["enum"] = ["GOVT"]

    edit_schema(project, "facility", change)
    result = migrate()
    assert result.exit_code == 1
    assert "DESTRUCTIVE require facility: websiteUrl is now required" in result.output
    assert "DESTRUCTIVE narrow enum facility: category" in result.output
    allowed = migrate("--allow-destructive")
    assert allowed.exit_code == 0 and "validation only" in allowed.output


def test_new_entity_gets_its_table_at_start(project: Path):
    (project / "schemas" / "batch.json").write_text(
        json.dumps(
            {
                "type": "object",
                "required": ["lot"],
                "properties": {"lot": {"type": "string"}},
                "x-registry": {"unique": ["lot"]},
            }
        )
    )
    reg = open_registry(Settings.load())
    reg.close()
    names = sorted(p.name for p in (project / "migrations" / "versions").glob("*.py"))
    assert names == ["0001_baseline.py", "0002_add_batch.py"]
    assert migrate("--check").exit_code == 0


class Comparisons:
    """Counts `plan` (the full comparison) and the counts of stored rows it runs, while it is
    installed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.plans = 0
        self.counts = 0
        real = migrations.plan

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.plans += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(migrations, "plan", counted)
        sa.event.listen(sa.engine.Engine, "before_cursor_execute", self._seen)
        self._undo = lambda: sa.event.remove(sa.engine.Engine, "before_cursor_execute", self._seen)

    def _seen(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        # `plan`'s checks of stored rows (not the test harness's look at an empty database)
        self.counts += "count(*)" in statement.lower() and "_deleted_at" in statement

    def close(self) -> None:
        self._undo()


@pytest.fixture
def comparisons(monkeypatch: pytest.MonkeyPatch) -> Any:
    seen = Comparisons(monkeypatch)
    yield seen
    seen.close()


def test_a_start_on_an_unchanged_database_trusts_its_fingerprint(project: Path, comparisons: Any):
    """The first start after the database was built compares (and stores the fingerprint); the
    next ones with the same schemas, tables and revision do not count a single row; a changed
    schema file is compared again and refused, leaving the stored fingerprint as it was."""
    open_registry(Settings.load()).close()  # the project's first start after init
    stored = rows(f"SELECT fingerprint FROM {migrations.STATE_TABLE}")
    assert len(stored) == 1 and len(stored[0][0]) == 64
    comparisons.plans = comparisons.counts = 0
    for _ in range(2):
        open_registry(Settings.load()).close()
    assert (comparisons.plans, comparisons.counts) == (0, 0)
    # the facility schema gains a required field its stored rows lack: compared, refused
    edit_schema(project, "facility", lambda d: d["required"].append("websiteUrl"))
    with pytest.raises(StartupError, match="websiteUrl is now required"):
        open_registry(Settings.load())
    assert comparisons.plans == 1 and comparisons.counts > 0
    assert rows(f"SELECT fingerprint FROM {migrations.STATE_TABLE}") == stored
    # back as it was: the same fingerprint, trusted again
    edit_schema(project, "facility", lambda d: d["required"].remove("websiteUrl"))
    comparisons.plans = 0
    open_registry(Settings.load()).close()
    assert comparisons.plans == 0


def test_a_fingerprint_that_does_not_match_is_compared_and_replaced(
    project: Path, comparisons: Any
):
    open_registry(Settings.load()).close()
    [(good,)] = rows(f"SELECT fingerprint FROM {migrations.STATE_TABLE}")
    reg = open_registry(Settings.load(), create_tables=False)
    with reg.db.engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE {migrations.STATE_TABLE} SET fingerprint = 'stale'"))
    reg.close()
    comparisons.plans = 0
    open_registry(Settings.load()).close()
    assert comparisons.plans == 1
    assert rows(f"SELECT fingerprint FROM {migrations.STATE_TABLE}") == [(good,)]


def test_migrate_compares_in_full_where_start_up_trusts_the_fingerprint(project: Path):
    """A change made to the database by hand, behind the registry's back, is not looked for at
    start-up (the fingerprint says the database matched); `registry migrate` finds it."""
    open_registry(Settings.load()).close()
    reg = open_registry(Settings.load(), create_tables=False)
    index = next(i for i in reg.db.metadata.tables["facility"].indexes if not i.unique)
    columns = ", ".join(c.name for c in index.columns)
    with reg.db.engine.begin() as conn:
        conn.execute(sa.text(f"DROP INDEX {index.name}"))
    reg.close()
    open_registry(Settings.load()).close()
    result = migrate("--check")
    assert result.exit_code == 1 and f"add index facility: ({columns})" in result.output, (
        result.output
    )


def test_serve_refuses_a_database_behind_the_revisions(project: Path, tmp_path: Path):
    edit_schema(
        project, "vaccine", lambda d: d["properties"].update({"storage": {"type": "string"}})
    )
    assert migrate().exit_code == 0
    # a second database built from revision 0001 only (as a server not yet migrated)
    revision = project / "migrations" / "versions" / "0002_add_column_vaccine.py"
    assert revision.exists()
    moved = tmp_path / revision.name
    revision.rename(moved)
    other = Settings.load().with_(database_url=f"sqlite:///{tmp_path / 'other.db'}")
    edit_schema(project, "vaccine", lambda d: d["properties"].pop("storage"))
    open_registry(other).close()
    moved.rename(revision)
    edit_schema(
        project, "vaccine", lambda d: d["properties"].update({"storage": {"type": "string"}})
    )
    with pytest.raises(StartupError, match="registry migrate apply"):
        open_registry(other)
    result = runner.invoke(app, ["migrate", "apply", "--database-url", other.database_url])
    assert result.exit_code == 0 and "0002" in result.output
    open_registry(other).close()


def test_a_project_made_before_the_open_registry_name_gets_its_env_py_updated(tmp_path: Path):
    from open_registry.core.migrations import _OLD_ENV_PY, ENV_PY, ensure_environment

    (tmp_path / "env.py").write_text(_OLD_ENV_PY)
    ensure_environment(tmp_path)
    assert (tmp_path / "env.py").read_text() == ENV_PY
    assert "from open_registry.core.migrations import" in ENV_PY
    edited = "# mine\n" + _OLD_ENV_PY  # an implementer's own env.py is left alone
    (tmp_path / "env.py").write_text(edited)
    ensure_environment(tmp_path)
    assert (tmp_path / "env.py").read_text() == edited
