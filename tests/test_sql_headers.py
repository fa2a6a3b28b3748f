"""Each SQL file's head lists every transaction's statements in order: the names it lists are the
statements the file holds, and every statement the file holds is listed, so the head a newcomer
reads first cannot drift from the SQL below it."""

import re

import pytest

from leasecron.kernel.sqlite import sql as sqlite_sql

WORD = re.compile(r"[a-z]+(?:_[a-z]+)*")


def head_words(module) -> set[str]:
    head = module.__doc__.split("Every transaction, its statements in order", 1)[1]
    head = head.split("\n\n", 2)[1]  # the list itself, up to the first blank line
    return set(WORD.findall(head))


def check(module, statements: dict[str, str], unlisted: set[str]) -> None:
    words = head_words(module)
    # a name_with_underscores is a statement's (the prose around them has none)
    named = {word for word in words if "_" in word}
    assert named - set(statements) == set(), "listed in the head, but no such statement"
    listed = words & set(statements)
    assert set(statements) - listed - unlisted == set(), "a statement the head does not list"


def test_the_sqlite_head_lists_exactly_its_statements():
    check(sqlite_sql, sqlite_sql.LEASE_SQL, unlisted=set())


def test_the_postgres_head_lists_exactly_its_statements():
    pytest.importorskip("psycopg")
    from leasecron.adapters.postgres import sql as postgres_sql

    # next_due_and_now and server_time are the time authority's reads (the head's Time part);
    # notify is queued by every write (the line after the list).
    check(postgres_sql, postgres_sql.LEASE_SQL, unlisted={"notify", "server_time"})
