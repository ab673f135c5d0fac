"""The system tables of authentication: users, API clients, one-time codes, rate counters, and
the times before which a user's or client's tokens no longer count."""

from __future__ import annotations

import sqlalchemy as sa

from open_registry.generators.tables import UTCDateTime, json_type


def auth_tables(metadata: sa.MetaData) -> None:
    """Add the authentication tables to `metadata` (created like every other system table)."""
    sa.Table(
        "registry_users",
        metadata,
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("username", sa.String(100), nullable=False, unique=True),
        sa.Column("password_hash", sa.Text),  # argon2id; NULL: signs in by one-time code only
        sa.Column("roles", json_type(), nullable=False),
        sa.Column("facility", sa.String(100)),
        sa.Column("recipient", sa.String(100)),
        # keyed hashes (the data keys' index key) of the sign-in email and mobile: never stored
        # in plain text, found by exact value only
        sa.Column("email_bi", sa.String(64), unique=True),
        sa.Column("phone_bi", sa.String(64), unique=True),
        sa.Column("disabled", sa.Boolean, nullable=False, default=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("created_by", sa.String(200)),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    sa.Table(
        "registry_clients",
        metadata,
        sa.Column("client_id", sa.String(64), primary_key=True),
        sa.Column("secret_hash", sa.Text, nullable=False),
        sa.Column("name", sa.String(200)),
        sa.Column("roles", json_type(), nullable=False),
        sa.Column("facility", sa.String(100)),
        sa.Column("scopes", json_type()),
        sa.Column("disabled", sa.Boolean, nullable=False, default=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("created_by", sa.String(200)),
    )
    sa.Table(
        "registry_otp",
        metadata,
        sa.Column("identifier", sa.String(64), primary_key=True),  # keyed hash
        sa.Column("code_hash", sa.String(64)),
        sa.Column("expires_at", UTCDateTime()),
        sa.Column("attempts", sa.Integer, nullable=False, default=0),
        sa.Column("locked_until", UTCDateTime()),
    )
    sa.Table(
        "registry_rate",
        metadata,
        sa.Column("key", sa.String(120), primary_key=True),
        sa.Column("window_start", UTCDateTime(), nullable=False),
        sa.Column("count", sa.Integer, nullable=False),
    )
    sa.Table(  # tokens of `actor` (user:<name>, client:<id>) issued before `not_before` are void
        "registry_revocations",
        metadata,
        sa.Column("actor", sa.String(200), primary_key=True),
        sa.Column("not_before", UTCDateTime(), nullable=False),
    )
