"""Dict rows from a plain ``sqlite3`` connection: the few calls of sqlite-utils' ``Database`` the store code uses.

>>> import sqlite3
>>> from memedit.store.rows import Rows
>>> db = Rows(sqlite3.connect(":memory:"))
>>> _ = db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)")
>>> db.table("t").insert({"name": "a"})
>>> list(db.query("SELECT * FROM t WHERE name = ?", ["a"])), db.table("t").count, db.table_names()
([{'id': 1, 'name': 'a'}], 1, ['t'])

Importing sqlite-utils cost about 80 ms of every ``memedit`` command; these
calls behave as its ``query``, ``execute``, ``table_names`` and
``table(name).count`` / ``.insert(record)`` do for the store's own use.
"""
from __future__ import annotations

import sqlite3
from typing import Any, Iterator, Mapping, Sequence


class Rows:
    """``query`` yields each row as a dict; ``execute`` returns the cursor; nothing else is wrapped."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def query(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> Iterator[dict[str, Any]]:
        cur = self.conn.execute(sql, params)
        keys = [d[0] for d in cur.description or ()]
        for row in cur:
            yield dict(zip(keys, row))

    def execute(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, params)

    def table_names(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]

    def table(self, name: str) -> "Table":
        return Table(self.conn, name)


class Table:
    """One table: its row count, and inserting one record."""

    def __init__(self, conn: sqlite3.Connection, name: str):
        if not name.isidentifier():
            raise ValueError(f"not a table name: {name!r}")
        self.conn, self.name = conn, name

    @property
    def count(self) -> int:
        return int(self.conn.execute(f"SELECT count(*) FROM {self.name}").fetchone()[0])

    def insert(self, record: Mapping[str, Any]) -> None:
        cols = list(record)
        if not all(c.isidentifier() for c in cols):
            raise ValueError(f"not column names: {cols}")
        self.conn.execute(f"INSERT INTO {self.name}({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                          [record[c] for c in cols])
