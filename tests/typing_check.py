"""Checked by mypy (`.ci/run`), never run: both stores satisfy the store protocols they are
used through, so a method added to a protocol and missed by a store fails the type check."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from leasecron.adapters.postgres import PostgresStore
    from leasecron.kernel import SqliteStore, Store
    from leasecron.kernel.sqlite.store import SqliteLeaseStore
    from leasecron.kernel.workflow.store import WorkflowStore

    def lease_stores(path: str, dsn: str) -> list[Store]:
        return [SqliteLeaseStore(path), SqliteStore(path), PostgresStore(dsn)]

    def workflow_stores(path: str, dsn: str) -> list[WorkflowStore]:
        return [SqliteStore(path), PostgresStore(dsn)]
