"""Opening a store from a `--db` value: a file path is a SQLite file; a URL names its store by
scheme through the `leasecron.stores` entry point group (the Postgres adapter registers
`postgresql` and `postgres`), so the kernel never imports an adapter by name."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from .errors import ValidationError
from .sqlite import SqliteStore


def open_store(db: str, *, inline: bool = False, readonly: bool = False, **options: Any) -> Any:
    """A Store for `db`: "path/to/file.db" (SQLite) or "<scheme>://..." (a registered store,
    given `options` as keywords, e.g. schema= and time_authority= for Postgres). `readonly`
    opens a SQLite file for reading only (a server store creates no file: it is opened as is)."""
    if "://" not in db:
        return SqliteStore(db, inline=inline, readonly=readonly)
    scheme = db.split("://", 1)[0].lower()
    found = entry_points(group="leasecron.stores", name=scheme)
    if not found:
        raise ValidationError(
            "db",
            f"no store for {scheme}:// URLs is installed (for Postgres: "
            "pip install 'leasecron[postgres]')",
        )
    return next(iter(found)).load()(db, **options)
