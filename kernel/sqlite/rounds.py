"""Set-based rounds of the SQLite store: a lockstep round of the shared write flows (a
writes.Batch: one start, heartbeat or finish step per schedule) sent as one statement per kind
of step (sql.ROUND_SQL: the per-row statement over a VALUES list, fenced per row, RETURNING the
rows it matched), answered per step as the per-row statements would answer."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

from .. import writes

ROUND_ROWS_MAX = 500  # rows of one set-based statement; a larger round is split
# The commands a round may send as one set-based statement per kind.
SET_BASED = (writes.Count, writes.One, writes.Many)


class SetRounds:
    """The set-based statements of one store: name -> (its parameters in VALUES order, the
    statement with {rows} left to fill), and the texts built from them."""

    def __init__(self, statements: dict[str, tuple[list[str], str]]):
        self.statements = statements
        # (name, rows) -> the statement's text: at most len(statements) * ROUND_ROWS_MAX of them
        self.texts: dict[tuple[str, int], str] = {}
        self._variables: int | None = None  # the connection's bound-parameter limit

    def run(
        self,
        conn: sqlite3.Connection,
        steps: list[writes.Command],
        answer: Callable[[writes.Command], Any],
    ) -> list[Any]:
        """One lockstep round: the steps of each kind that has a set-based form (sql.ROUND_SQL)
        as one statement over the round's rows, the others one statement each. Answers in the
        steps' order, as the per-row statements would give them. The kinds run one after the
        other: the rows of a round are distinct schedules, so their order changes no outcome."""
        kinds: dict[str, list[int]] = {}
        for index, inner in enumerate(steps):
            if isinstance(inner, SET_BASED) and inner.name in self.statements:
                kinds.setdefault(inner.name, []).append(index)
        answers: list[Any] = [None] * len(steps)
        done: set[int] = set()
        for index, inner in enumerate(steps):
            if index in done:
                continue
            if isinstance(inner, SET_BASED):
                group = kinds.get(inner.name)
                if (
                    group is not None
                    and group[0] == index
                    and self._set(conn, inner.name, steps, group, answers)
                ):
                    done.update(group)
                    continue
            answers[index] = answer(inner)
        return answers

    def _set(
        self,
        conn: sqlite3.Connection,
        name: str,
        steps: list[writes.Command],
        indexes: list[int],
        answers: list[Any],
    ) -> bool:
        """Run one kind's steps of a round as its set-based statement and fill their answers: a
        Count 1 or 0 (an INSERT, always 1), a One its row or None, a Many nothing. False (nothing
        run) where the per-row statements must run instead: a single row, or one target row named
        twice."""
        columns, template = self.statements[name]
        group = [steps[i] for i in indexes]
        params: list[Any] = []
        for inner in group:
            if isinstance(inner, writes.Many):
                params.extend(inner.params)
            elif isinstance(inner, (writes.Count, writes.One)):
                params.append(inner.params)
        if len(params) < 2 or len({p["id"] for p in params}) < len(params):
            return False
        matched: dict[str, Any] = {}
        width = min(ROUND_ROWS_MAX, self._max_variables(conn) // len(columns))
        for start in range(0, len(params), width):
            chunk = params[start : start + width]
            values = [p[column] for p in chunk for column in columns]
            sql = self.text(name, template, len(columns), len(chunk))
            for row in conn.execute(sql, values).fetchall():
                matched[row["id"]] = row
        for index, inner in zip(indexes, group, strict=True):
            if isinstance(inner, writes.Count):
                answers[index] = 1 if name == "insert_run" or inner.params["id"] in matched else 0
            elif isinstance(inner, writes.One):
                answers[index] = matched.get(inner.params["id"])
        return True

    def text(self, name: str, template: str, width: int, rows: int) -> str:
        key = (name, rows)
        text = self.texts.get(key)
        if text is None:
            row = "(" + ", ".join("?" * width) + ")"
            text = self.texts[key] = template.format(rows=", ".join([row] * rows))
        return text

    def _max_variables(self, conn: sqlite3.Connection) -> int:
        if self._variables is None:
            self._variables = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        return self._variables
