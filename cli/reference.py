"""Write the CLI reference (docs/cli.md) from the commands' own `--help`, so it never drifts.

python -m open_registry.cli.reference > docs/cli.md
"""

from __future__ import annotations

import os
from typing import Any

import typer
from typer.testing import CliRunner

from open_registry.cli.main import with_plugin_commands


def _paths(cmd: Any, prefix: list[str]) -> list[list[str]]:
    """`cmd`: a command of typer's own copy of click (no `click.Command`), read by duck typing."""
    out = [prefix]
    commands = getattr(cmd, "commands", None)
    if isinstance(commands, dict):  # a group (typer may not subclass click)
        for name in sorted(commands):
            out.extend(_paths(commands[name], [*prefix, name]))
    return out


def render() -> str:
    """The whole reference as Markdown."""
    os.environ.setdefault("COLUMNS", "100")
    runner = CliRunner(env={"COLUMNS": "100", "NO_COLOR": "1", "TERM": "dumb"})
    # the built-in plugins' commands too (`registry keys`, `registry verify`)
    app = with_plugin_commands(third_party=False)
    root = typer.main.get_command(app)
    parts = [
        "# `registry` command reference",
        "",
        "Generated from `--help` by `python -m open_registry.cli.reference > docs/cli.md`; "
        "a test checks it is current.",
        "",
    ]
    for path in _paths(root, []):
        result = runner.invoke(app, [*path, "--help"], prog_name="registry")
        parts += [
            f"## registry {' '.join(path)}".rstrip(),
            "",
            "```text",
            "\n".join(line.rstrip() for line in result.output.strip("\n").splitlines()),
            "```",
            "",
        ]
    return "\n".join(parts)


if __name__ == "__main__":
    print(render(), end="")
