"""Test plumbing: async test functions run on a fresh event loop (no plugin needed); the
`open_store` and `pg_dsn` fixtures of the suites run against every store (a module may define
its own under the same names); `browser` is Debian's chromium under Playwright."""

from __future__ import annotations

import asyncio
import inspect
import os
import shutil

import pytest

from store_builders import STORES, stores_for


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    if inspect.iscoroutinefunction(pyfuncitem.obj):
        args = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
        asyncio.run(pyfuncitem.obj(**args))
        return True
    return None


@pytest.fixture(scope="module")
def pg_dsn():
    """A fresh database for the module's Postgres tests, dropped at the end."""
    import pgserver  # only when a Postgres test asks for it

    with pgserver.fresh_database() as dsn:
        yield dsn


@pytest.fixture(params=STORES)
def open_store(request, tmp_path):
    """A Stores factory for the param's kind: each call opens another store on one database."""
    with stores_for(request, tmp_path / "store.db") as stores:
        yield stores


@pytest.fixture
def browser():
    """Debian's chromium, launched through Playwright; skipped when it is not installed, unless
    LEASECRON_BROWSER_REQUIRED=1 (CI), where its absence fails."""
    chromium = shutil.which("chromium")
    if chromium is None:
        why = "no chromium on PATH (Debian's apt package `chromium`)"
        if os.environ.get("LEASECRON_BROWSER_REQUIRED") == "1":
            pytest.fail(f"LEASECRON_BROWSER_REQUIRED=1 but {why}", pytrace=False)
        pytest.skip(why)
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=chromium)
        try:
            yield launched
        finally:
            launched.close()
