"""The PostgreSQL server the Postgres tests run against, shared by every test module that needs it.

The server is $LEASECRON_PG_DSN (default postgresql://postgres@127.0.0.1:5432/postgres, a
superuser: tests create and drop their own databases). Without psycopg or a reachable server the
tests are skipped with the reason, unless LEASECRON_PG_REQUIRED=1 (set by .ci/run), which turns
the skip into a failure: in CI the Postgres tests must run.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator

import pytest

ADMIN_DSN = os.environ.get("LEASECRON_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
REQUIRED = os.environ.get("LEASECRON_PG_REQUIRED") == "1"


def _unavailable() -> str | None:
    try:
        import psycopg
        import psycopg_pool  # noqa: F401
    except ImportError as exc:
        return f"the postgres extra is not installed ({exc.name}): pip install -e '.[postgres]'"
    try:
        with psycopg.connect(ADMIN_DSN, connect_timeout=3):
            return None
    except psycopg.Error as exc:
        return f"PostgreSQL unreachable at {ADMIN_DSN}: {str(exc).strip()}"


UNAVAILABLE = _unavailable()


def require_server() -> None:
    """Skip the calling module (fail it, in CI) when there is no server to test against."""
    if UNAVAILABLE:
        if REQUIRED:
            pytest.fail(f"LEASECRON_PG_REQUIRED=1 but {UNAVAILABLE}", pytrace=False)
        pytest.skip(UNAVAILABLE, allow_module_level=True)


def database_url(name: str) -> str:
    """A postgresql:// URL for database `name` on the admin DSN's server: the form the CLI's
    --db takes (a key=value DSN would be read as a file path)."""
    from urllib.parse import quote

    from psycopg.conninfo import conninfo_to_dict

    parts = conninfo_to_dict(ADMIN_DSN)
    user = quote(str(parts.get("user", "postgres")))
    if parts.get("password"):
        user += ":" + quote(str(parts["password"]))
    host = parts.get("host", "127.0.0.1")
    port = parts.get("port", 5432)
    return f"postgresql://{user}@{host}:{port}/{quote(name)}"


@contextlib.contextmanager
def fresh_database(prefix: str = "leasecron_test") -> Iterator[str]:
    """A new database for the caller, dropped (connections and all) afterwards; yields its DSN."""
    import psycopg

    name = f"{prefix}_{secrets.token_hex(4)}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield database_url(name)
    finally:
        with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
