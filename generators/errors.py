"""Errors raised while reading a schema file: each names the file, a JSON pointer and the reason."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SchemaIssue:
    """One problem in one schema file."""

    source: str
    pointer: str
    message: str

    def __str__(self) -> str:
        return f"{self.source}: {self.pointer or '/'}: {self.message}"


class SchemaError(Exception):
    """One or more schema files are broken; `issues` lists every problem found."""

    def __init__(self, issues: list[SchemaIssue]):
        self.issues = list(issues)
        super().__init__("\n".join(str(i) for i in self.issues))


def pointer(*parts: object) -> str:
    """Build an RFC 6901 JSON pointer from path parts."""
    out = []
    for p in parts:
        out.append(str(p).replace("~", "~0").replace("/", "~1"))
    return "/" + "/".join(out) if out else ""
