"""PostgresStore's set-based rounds: a lockstep round of the shared write flows (a
writes.Batch: one start, heartbeat or finish step per schedule) sent in one round trip (pipeline
mode), each kind of step that has a set form (sql.ROUND_SQL) as one statement over arrays,
fenced per row, the rest one statement each, and answered per step as the per-row statements
would answer. A mixin of PostgresStore: it uses the store's statements and channel."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import psycopg

from leasecron.kernel import writes

Conn = psycopg.AsyncConnection[dict[str, Any]]  # every connection makes dict rows

# A set-based statement's array element types, as Python sees them: every element converted, so
# one array never mixes int and float (psycopg types an array by its elements).
_ROUND_TYPES: dict[str, Callable[[Any], Any]] = {
    "text": str,
    "int": int,
    "bigint": int,
    "float8": float,
    "bool": bool,
}


def round_column(spec: str) -> tuple[str, Callable[[Any], Any]]:
    """`name type` of a ROUND_SQL parameter: its name and the conversion of its values."""
    name, kind = spec.split()
    return name, _ROUND_TYPES[kind]


class SetRounds:
    """Set-based rounds and the pipelined steps beside them (see the module docstring)."""

    _sql: dict[str, str]
    _round_sql: dict[str, str]  # name -> its set-based statement
    _round_columns: dict[str, list[tuple[str, Callable[[Any], Any]]]]  # its arrays, typed
    channel: str

    async def _round(self, conn: Conn, steps: list[writes.Command]) -> list[Any]:
        """One lockstep round, in one round trip (pipeline mode): the steps of each kind that has
        a set-based form (postgres_sql.ROUND_SQL) as one statement over arrays, the others one
        statement each; the round's notifications as one. Answers in the steps' order, as the
        per-row statements would give them."""
        kinds: dict[str, list[int]] = {}
        for index, inner in enumerate(steps):
            if isinstance(inner, (writes.Count, writes.One, writes.Many)):
                kinds.setdefault(inner.name, []).append(index)
            elif isinstance(inner, writes.Notify):
                kinds.setdefault("notify", []).append(index)
        answers: list[Any] = [None] * len(steps)
        alone = set(range(len(steps)))
        async with conn.pipeline() as pipeline:
            sets = []
            for name, indexes in kinds.items():
                if name == "notify":
                    alone.difference_update(indexes[1:])  # one notification wakes every replica
                    continue
                rows = self._round_rows(name, [steps[i] for i in indexes])
                if rows is None:
                    continue
                cur = conn.cursor()
                await cur.execute(self._round_sql[name], rows)
                sets.append((indexes, cur))
                alone.difference_update(indexes)
            singles = [(i, await self._send(conn, steps[i])) for i in sorted(alone)]
            await pipeline.sync()
        for indexes, cur in sets:
            await self._round_reply(steps, indexes, cur, answers)
        for index, cur in singles:
            answers[index] = await self._reply(steps[index], cur)
        return answers

    def _round_rows(self, name: str, steps: list[writes.Command]) -> dict[str, list[Any]] | None:
        """The arrays of a set-based statement: one element per row (a Many step gives one row
        per parameter set), each column's values of its declared type. None where the per-row
        statements must run instead: no set form, a single row, or one target row named twice
        (an UPDATE joined to it twice would apply only one of them)."""
        columns = self._round_columns.get(name)
        if columns is None:
            return None
        params: list[Mapping[str, Any]] = []
        for inner in steps:
            if isinstance(inner, writes.Many):
                params.extend(inner.params)
            elif isinstance(
                inner, writes.Count | writes.One | writes.All | writes.Update | writes.Insert
            ):
                params.append(inner.params)
            else:  # only statements that have a set form are sent as one round
                return None
        if len(params) < 2 or len({p["id"] for p in params}) < len(params):
            return None
        return {
            column: [None if (v := p[column]) is None else kind(v) for p in params]
            for column, kind in columns
        }

    @staticmethod
    async def _round_reply(
        steps: list[writes.Command], indexes: list[int], cur: Any, answers: list[Any]
    ) -> None:
        """Per-row answers of a set-based statement, from the rows it returned (v.i, 1-based:
        the row's place in the arrays): a Count 1 or 0 (an INSERT, always 1), a One its row or
        None, a Many nothing."""
        matched: dict[int, dict[str, Any]] = {}
        if cur.description is not None:
            for row in await cur.fetchall():
                matched[row.pop("i")] = row
        for place, index in enumerate(indexes, start=1):
            inner = steps[index]
            if isinstance(inner, writes.Count):
                answers[index] = 1 if inner.name == "insert_run" or place in matched else 0
            elif isinstance(inner, writes.One):
                answers[index] = matched.get(place)

    async def _send(self, conn: Conn, step: writes.Command) -> Any:
        """Queue one step of a pipelined Batch; its cursor, read by _reply after the sync."""
        cur = conn.cursor()
        if isinstance(step, (writes.Count, writes.One, writes.All)):
            await cur.execute(self._sql[step.name], step.params)
        elif isinstance(step, writes.Many):
            await cur.executemany(self._sql[step.name], step.params)
        elif isinstance(step, writes.Lock):
            if step.ids:
                await cur.execute(self._sql["lock_schedules"], {"ids": sorted(set(step.ids))})
        else:
            await cur.execute(self._sql["notify"], {"channel": self.channel})
        return cur

    @staticmethod
    async def _reply(step: writes.Command, cur: Any) -> Any:
        if isinstance(step, writes.Count):
            return cur.rowcount
        if isinstance(step, writes.One):
            return await cur.fetchone()
        if isinstance(step, writes.All):
            return await cur.fetchall()
        return None
