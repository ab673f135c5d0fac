"""The API against its own OpenAPI document (schemathesis), in process, on SQLite with the demo
data, as a system-admin and as a facility's staff (CI's fuzz step: `pytest -m fuzz tests/fuzz`).

Every operation of `/openapi.json` gets up to `MAX_EXAMPLES` inputs the document allows
(positive) and as many it forbids (negative: wrong types, missing required values, ...), and every
answer is checked: no server error (`not_a_server_error`), a body that fits the schema declared
for its status (`response_schema_conformance`), and a status the operation declares
(`status_code_conformance`). Inputs come from a fixed seed (hypothesis `derandomize`): a run is
reproducible; `REGISTRY_FUZZ_EXAMPLES=50` tries more, `REGISTRY_FUZZ_SEED=<n>` other inputs.

A failure names the operation, the check, the status, the request (as curl) and, for a server
error, the head of the traceback the app logged. `KNOWN` lists failures being fixed elsewhere:
they are reported (captured output, `-rA`) but do not fail the run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import traceback
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)

from open_registry.core import create_app
from open_registry.core.app import Registry
from open_registry.core.demo import load_demo_data
from open_registry.core.testing import auth_headers

pytestmark = pytest.mark.fuzz

CALLERS = ("system-admin", "facility-staff")
#: inputs per operation and mode (positive, negative)
MAX_EXAMPLES = int(os.environ.get("REGISTRY_FUZZ_EXAMPLES", "10"))
SEED = os.environ.get("REGISTRY_FUZZ_SEED")
#: one caller's run past this many seconds: the operations left get 2 inputs per mode each
#: (each is still tried; the run stays near its budget on a slow or busy machine)
BUDGET_SECONDS = float(os.environ.get("REGISTRY_FUZZ_SECONDS", "150"))
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance]
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)

#: (caller, operation, check title) -> why it fails and where it is fixed. Reported, never
#: failing; remove an entry once its fix is in (the run then checks that case again).
KNOWN: dict[tuple[str, str, str], str] = {}


@dataclass
class Found:
    """One distinct failure: the first request that showed it, and how often it was seen."""

    caller: str
    operation: str
    mode: str
    check: str
    status: int
    message: str
    request: str
    trace: str = ""
    seen: int = 1

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.caller, self.operation, self.check)

    def __str__(self) -> str:
        known = KNOWN.get(self.key)
        lines = [
            f"- {self.operation} [{self.mode}] {self.check}: {self.status} (x{self.seen})"
            + (f"  KNOWN: {known}" if known else ""),
            f"    {self.request}",
            *(f"    {line}" for line in self.message.strip().splitlines()[:12]),
        ]
        if self.trace:
            lines += ["    traceback (head):", *(f"      {x}" for x in self.trace.splitlines())]
        return "\n".join(lines)


def head(exc: BaseException) -> str:
    """The gist of a traceback: the last frames outside the libraries, then the exception."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "/site-packages/" not in f.filename]
    return "".join(traceback.format_list(ours[-3:])) + f"{type(exc).__name__}: {exc}"


class LastTraceback(logging.Handler):
    """The traceback of the last exception the app logged (the cause of a 500)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.text = ""

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[1] is not None:
            self.text = head(record.exc_info[1])

    def take(self) -> str:
        text, self.text = self.text, ""
        return text


@dataclass
class Run:
    """One caller's run over every operation."""

    caller: str
    headers: dict[str, str]
    logged: LastTraceback
    operations: int = 0
    cases: int = 0
    server_errors: int = 0
    schema_violations: int = 0
    undocumented_statuses: int = 0
    shortened: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    found: dict[tuple[str, str, str], Found] = field(default_factory=dict)

    def check(self, case: Any, mode: str) -> None:
        self.logged.take()
        try:
            response = case.call(headers=self.headers)
        except Exception as exc:
            self.cases += 1
            trace = head(exc)
            if self.logged.take():  # the app answered 500 and logged it; the transport re-raises
                self.statuses[500] += 1
                self.server_errors += 1
                self.note(case, mode, "Server error", 500, repr(exc), trace)
            else:  # the request never reached the app
                self.note(case, mode, "Request failed", 0, repr(exc), trace)
            return
        self.cases += 1
        self.statuses[response.status_code] += 1
        if response.status_code >= 500:
            self.server_errors += 1
        try:
            case.validate_response(response, checks=CHECKS)
        except (Failure, FailureGroup) as exc:
            failures = exc.exceptions if isinstance(exc, FailureGroup) else (exc,)
            trace = self.logged.take() if response.status_code >= 500 else ""
            for failure in failures:
                title = failure.title
                if title.startswith("Response violates schema"):
                    self.schema_violations += 1
                elif title.startswith("Undocumented status code"):
                    self.undocumented_statuses += 1
                self.note(case, mode, title, response.status_code, failure.message, trace)

    def note(self, case: Any, mode: str, title: str, status: int, message: str, trace: str) -> None:
        key = (self.caller, case.operation.label, title)
        if key in self.found:
            self.found[key].seen += 1
            return
        request = case.as_curl_command(headers={"Authorization": "Bearer ..."})
        self.found[key] = Found(
            self.caller, case.operation.label, mode, title, status, message, request, trace
        )

    def operation(self, operation: Any, examples: int) -> None:
        self.operations += 1
        for mode in MODES:
            test = self.test(operation, mode, examples)
            with contextlib.suppress(Unsatisfiable):  # nothing to get wrong: no input at all
                test()

    def test(self, operation: Any, mode: GenerationMode, examples: int) -> Any:
        """The hypothesis test of one operation in one mode."""

        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            derandomize=SEED is None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
            print_blob=False,
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def run(case: Any) -> None:
            self.check(case, mode.value)

        return run if SEED is None else seed(int(SEED))(run)

    def summary(self) -> str:
        return (
            f"{self.caller}: {self.operations} operations, {self.cases} cases, "
            f"{self.server_errors} server errors, {self.schema_violations} schema violations, "
            f"{self.undocumented_statuses} undocumented statuses, {len(self.found)} distinct "
            f"failures ({sum(1 for k in self.found if k in KNOWN)} known)"
            + (f"; {self.shortened} operations shortened (budget)" if self.shortened else "")
            + "; statuses "
            + ", ".join(f"{s}: {n}" for s, n in sorted(self.statuses.items()))
        )


def without_lifespan(app: Any) -> Any:
    """The app for schemathesis' ASGI transport, which would start its lifespan and stop it at
    the process's exit: the test owns the registry (and no outbox worker runs)."""

    async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        await app(scope, receive, send)

    return asgi


def headers_of(registry: Registry, caller: str) -> dict[str, str]:
    if caller == "system-admin":
        return auth_headers(registry)
    vaccinators = registry.services["vaccinator"]
    first = vaccinators.search(vaccinators.parser.from_params([("limit", "1")])).items[0]
    return auth_headers(registry, caller, facility=first["facilityIds"][0])


@pytest.fixture
def demo_registry(sqlite_registry: Registry) -> Registry:
    load_demo_data(sqlite_registry.services)
    return sqlite_registry


@pytest.fixture
def last_traceback() -> Iterator[LastTraceback]:
    handler = LastTraceback()
    logger = logging.getLogger("registry")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


@pytest.mark.parametrize("caller", CALLERS)
def test_every_operation_answers_as_its_document_says(
    caller: str, demo_registry: Registry, last_traceback: LastTraceback
):
    schema = schemathesis.openapi.from_asgi(
        "/openapi.json", without_lifespan(create_app(registry=demo_registry))
    )
    run = Run(caller, headers_of(demo_registry, caller), last_traceback)
    started = time.monotonic()
    invalid = []
    for result in schema.get_all_operations():
        try:
            operation = result.ok()
        except Exception as exc:  # the document itself is wrong here
            invalid.append(str(exc))
            continue
        over = time.monotonic() - started > BUDGET_SECONDS
        run.shortened += over
        run.operation(operation, min(2, MAX_EXAMPLES) if over else MAX_EXAMPLES)
    elapsed = time.monotonic() - started
    print(f"{run.summary()} in {elapsed:.0f} s")
    for found in run.found.values():
        print(found)
    failing = [f for f in run.found.values() if f.key not in KNOWN]
    assert not invalid, "operations the document describes wrongly:\n" + "\n".join(invalid)
    assert not failing, f"{run.summary()}\n" + "\n".join(str(f) for f in failing)
