"""The event row: what one write of one record leaves behind, defined once.

Every write (the API's batch of one, an import's batch of thousands, a plugin's follow-up work)
produces one `Change` per record. The audit chain records it as an entry (who, when, what, which
fields: never a value) and the outbox as an event for `after_write`; both derive their rows from
here (`registry.audit.chain.entry_of`, `registry.outbox.queue.event_of`), so a new column or
rule is written once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import orjson

#: write actions and the event name each gives (`vaccination.created`)
ACTIONS = {"create": "created", "update": "updated", "delete": "deleted", "purge": "purged"}


@dataclass(frozen=True, slots=True)
class Change:
    """One record written: `fields` are the names that changed (all of them for a create)."""

    entity: str
    action: str
    record_id: str
    version: int
    fields: Sequence[str]
    actor: str | None
    at: datetime
    #: the canonical JSON of `fields` when the caller already has it (bulk imports do)
    fields_text: str | None = None

    @property
    def event(self) -> str:
        return f"{self.entity}.{ACTIONS.get(self.action, self.action + 'd')}"

    def fields_json(self) -> str:
        """`fields` as compact JSON (a sorted list gives the audit chain's canonical form)."""
        if self.fields_text is not None:
            return self.fields_text
        return orjson.dumps(list(self.fields)).decode()


def changes(
    entity: str,
    action: str,
    entries: Sequence[tuple[str, int, Sequence[str]]],
    actor: str | None,
    at: datetime,
) -> list[Change]:
    """`Change`s of one action from (record id, version, changed field names) entries."""
    return [
        Change(entity, action, rid, version, names, actor, at) for rid, version, names in entries
    ]
