"""The table a write goes to: its name as identifiers, and what the catalog says of it.

``table`` is ``"name"`` or ``"schema.name"`` (each part quoted as an identifier, never
pasted into the SQL), or a ``(schema, name)`` tuple for names that contain a dot.
An unqualified name is found, and created, through the session's ``search_path``
(the ``schema=`` option), as PostgreSQL itself would.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from ..errors import ConfigurationError

MAX_IDENTIFIER = 63  # NAMEDATALEN - 1: PostgreSQL truncates longer names, silently


@dataclass(frozen=True)
class TableName:
    """A table's name as the user gave it: an optional schema and the name."""

    schema: str | None
    name: str

    @property
    def identifier(self) -> sql.Identifier:
        return sql.Identifier(self.name) if self.schema is None else sql.Identifier(self.schema, self.name)

    def __str__(self) -> str:
        return self.name if self.schema is None else f"{self.schema}.{self.name}"


@dataclass(frozen=True)
class Column:
    name: str
    type_oid: int
    typmod: int
    sql_type: str    # format_type(): 'numeric(12,2)', 'character varying(20)'
    not_null: bool
    has_default: bool  # a DEFAULT, identity or serial: the server fills it when the data lacks it
    generated: bool    # GENERATED ALWAYS AS (...) STORED: never written


@dataclass(frozen=True)
class TableInfo:
    """An existing table: its qualified name, its columns and its unique keys."""

    schema: str
    name: str
    columns: tuple[Column, ...]
    unique_keys: tuple[frozenset[str], ...]  # key column sets of the unique indexes ON CONFLICT can use
    kind: str  # pg_class.relkind: 'r' table, 'p' partitioned table

    @property
    def identifier(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name)

    def __str__(self) -> str:
        return f"{self.schema}.{self.name}"


def parse(table: object) -> TableName:
    """``"name"``, ``"schema.name"`` or ``(schema, name)`` as a :class:`TableName`."""
    if isinstance(table, tuple) and len(table) == 2 and all(isinstance(p, str) for p in table):
        parts = list(table)
    elif isinstance(table, str):
        parts = table.split(".")
        if len(parts) > 2:
            raise ConfigurationError(
                f"table {table!r}: give 'name' or 'schema.name'; for a name that contains a dot, "
                "pass a (schema, name) tuple")
    else:
        raise TypeError(f"write(table=...) takes 'name', 'schema.name' or a (schema, name) tuple, "
                        f"got {type(table).__name__}")
    for part in parts:
        if not part or part != part.strip() or "\x00" in part:
            raise ConfigurationError(
                f"table {table!r}: an empty name, one with spaces around it, or one with a NUL character")
        if len(part.encode()) > MAX_IDENTIFIER:
            raise ConfigurationError(
                f"table {table!r}: {part!r} is longer than PostgreSQL's {MAX_IDENTIFIER} bytes "
                "(it would be truncated)")
    return TableName(parts[0], parts[1]) if len(parts) == 2 else TableName(None, parts[0])


_FIND = """
select c.oid, n.nspname, c.relname, c.relkind
from pg_class c join pg_namespace n on n.oid = c.relnamespace
where c.oid = to_regclass(%s)
"""
_COLUMNS = """
select a.attname, a.atttypid, a.atttypmod, format_type(a.atttypid, a.atttypmod), a.attnotnull,
       a.atthasdef or a.attidentity <> '', a.attgenerated <> ''
from pg_attribute a
where a.attrelid = %s and a.attnum > 0 and not a.attisdropped
order by a.attnum
"""
# The unique indexes ON CONFLICT can take as its arbiter: valid, immediate (not DEFERRABLE),
# not partial, on columns (not expressions); their key columns only (not INCLUDE ones).
_KEYS = """
select array(select a.attname from unnest((i.indkey::int2[])[0:i.indnkeyatts - 1]) k
             join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k)
from pg_index i
where i.indrelid = %s and i.indisunique and i.indpred is null and i.indexprs is null
  and i.indisvalid and i.indimmediate
"""


def qualified(conn: psycopg.Connection, table: TableName) -> TableName:
    """The existing table ``table`` names, with its schema (as the search_path resolves it)."""
    _, schema, name, _ = conn.execute(_FIND, (table.identifier.as_string(conn),)).fetchone()
    return TableName(schema, name)


def inspect(conn: psycopg.Connection, table: TableName) -> TableInfo | None:
    """The existing table ``table`` names (through the search_path), or None if there is none."""
    qualified = table.identifier.as_string(conn)
    row = conn.execute(_FIND, (qualified,)).fetchone()
    if row is None:
        return None
    oid, schema, name, kind = row
    if kind not in ("r", "p"):
        what = {"v": "a view", "m": "a materialized view", "f": "a foreign table",
                "S": "a sequence", "i": "an index"}.get(kind, f"a relation of kind {kind!r}")
        raise ConfigurationError(f"{schema}.{name} is {what}, not a table: write() writes into tables")
    columns = tuple(Column(*r) for r in conn.execute(_COLUMNS, (oid,)).fetchall())
    keys = tuple(frozenset(r[0]) for r in conn.execute(_KEYS, (oid,)).fetchall())
    return TableInfo(schema, name, columns, keys, kind)
