"""What one write does to the database, by mode: the statements around its COPY.

Every plan runs inside one transaction:

- ``create`` (the table must not exist) and any mode on a missing table:
  ``CREATE TABLE``, then ``COPY … FREEZE`` into it (the table is new in this
  transaction, so its rows need no later freezing);
- ``append``: ``COPY`` into the existing table, each value encoded into its
  column's own type;
- ``replace``: ``CREATE TABLE`` a staging table beside it, ``COPY`` into that, then
  ``DROP TABLE`` the old one and rename the new one into place: readers see the
  old table or the new one, never an empty or half one, and the old one is
  locked only for the swap;
- ``upsert``: ``COPY`` into a temporary table (``ON COMMIT DROP``, safe through
  PgBouncer), then ``INSERT … SELECT … ON CONFLICT (key) DO UPDATE``.

Everything that can be known from the data and the catalog is checked before
the first row is sent: the data's columns against the table's (missing,
extra, generated, of a type that cannot be written exactly), the key against
the table's unique constraints.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

import pyarrow as pa
from psycopg import sql

from ..errors import ConfigurationError
from . import _pgtypes
from ._pgtypes import Target
from ._table import TableInfo, TableName

MODES = ("create", "append", "replace", "upsert")


@dataclass
class Plan:
    """The statements of one write: ``before`` the COPY, the COPY itself, ``after`` it."""

    before: list[sql.Composable]
    copy: sql.Composable
    targets: list[Target]
    after: list[sql.Composable] = field(default_factory=list)
    created: bool = False  # the write creates the table the user named


def check_arguments(mode: object, key: object, schema: pa.Schema) -> tuple[str, ...]:
    """``mode`` and ``key`` checked against each other and the data; returns the key's columns."""
    if mode not in MODES:
        raise ConfigurationError(f"mode= takes one of {', '.join(map(repr, MODES))}; got {mode!r}")
    if key is None:
        columns: tuple[str, ...] = ()
    elif isinstance(key, str):
        columns = (key,)
    elif isinstance(key, (list, tuple)) and all(isinstance(k, str) for k in key):
        columns = tuple(key)
    else:
        raise TypeError(f"key= takes a column name or a list of column names, got {key!r}")
    if mode == "upsert" and not columns:
        raise ConfigurationError(
            "mode='upsert' needs key=[columns]: the columns that identify a row (a primary key or "
            "unique constraint of the table)")
    if len(set(columns)) != len(columns):
        raise ConfigurationError(f"key= names a column twice: {list(columns)}")
    names = schema.names
    missing = [k for k in columns if k not in names]
    if missing:
        raise ConfigurationError(f"key= names {missing}, which the data does not have (its columns: {names})")
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise ConfigurationError(f"the data has duplicate column names {dupes}")
    return columns


def plan(mode: str, name: TableName, info: TableInfo | None, schema: pa.Schema,
         key: Sequence[str]) -> Plan:
    """The plan for ``mode`` on the table ``name`` (``info``: the existing table, or None)."""
    if info is None:
        return _create(name.identifier, schema, key, created=True)
    if mode == "create":
        raise ConfigurationError(
            f"table {info} already exists (mode='create'); use mode='append' to add rows, "
            "'replace' to replace it, or 'upsert' with key=")
    if mode == "replace":
        staged = _staging_name(info.name)
        staging = sql.Identifier(info.schema, staged)
        made = _create(staging, schema, key, created=False)
        made.after = [sql.SQL("DROP TABLE {}").format(info.identifier),
                      sql.SQL("ALTER TABLE {} RENAME TO {}").format(staging, sql.Identifier(info.name))]
        if key:
            made.after.append(sql.SQL("ALTER TABLE {} RENAME CONSTRAINT {} TO {}").format(
                info.identifier, sql.Identifier(_pkey(staged)),
                sql.Identifier(_pkey(info.name))))
        return made
    targets = _targets(info, schema, key if mode == "upsert" else ())
    columns = sql.SQL(", ").join(map(sql.Identifier, schema.names))
    if mode == "append":
        return Plan([], _copy(info.identifier, columns, freeze=False), targets)
    # upsert: a temporary table of the target's own column types, then one INSERT … ON CONFLICT.
    stage = sql.Identifier(_staging_name("upsert"))
    types = {c.name: c.sql_type for c in info.columns}
    definition = sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(types[n]))
                                    for n in schema.names)
    updates = [n for n in schema.names if n not in key]
    action = (sql.SQL("DO UPDATE SET {}").format(sql.SQL(", ").join(
        sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(n)) for n in updates))
              if updates else sql.SQL("DO NOTHING"))
    insert = sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} ON CONFLICT ({}) {}").format(
        info.identifier, columns, columns, stage, sql.SQL(", ").join(map(sql.Identifier, key)), action)
    return Plan([sql.SQL("CREATE TEMPORARY TABLE {} ({}) ON COMMIT DROP").format(stage, definition)],
                _copy(stage, columns, freeze=False), targets, [insert])


def _create(table: sql.Identifier, schema: pa.Schema, key: Sequence[str], *, created: bool) -> Plan:
    targets = _pgtypes.create_targets(schema)
    statement = (_with_primary_key(table, schema, targets, key) if key
                 else _pgtypes.create_table(table, schema, targets))
    columns = sql.SQL(", ").join(map(sql.Identifier, schema.names))
    return Plan([statement], _copy(table, columns, freeze=True), targets, created=created)


def _with_primary_key(table: sql.Identifier, schema: pa.Schema, targets: Sequence[Target],
                      key: Sequence[str]) -> sql.Composed:
    columns = [sql.SQL("{} {}").format(sql.Identifier(f.name), sql.SQL(t.sql_type))
               for f, t in zip(schema, targets)]
    columns.append(sql.SQL("PRIMARY KEY ({})").format(sql.SQL(", ").join(map(sql.Identifier, key))))
    return sql.SQL("CREATE TABLE {} ({})").format(table, sql.SQL(", ").join(columns))


def _copy(table: sql.Identifier, columns: sql.Composable, *, freeze: bool) -> sql.Composed:
    options = sql.SQL("FORMAT binary, FREEZE" if freeze else "FORMAT binary")
    return sql.SQL("COPY {} ({}) FROM STDIN ({})").format(table, columns, options)


def _staging_name(name: str) -> str:
    """A fresh name for a staging table, within PostgreSQL's 63 bytes."""
    suffix = f"__nn_{secrets.token_hex(4)}"
    base = name.encode()[:63 - len(suffix)].decode(errors="ignore")
    return base + suffix


def _pkey(name: str) -> str:
    """The name PostgreSQL gives a table's primary key constraint (``<table>_pkey``, truncated)."""
    return name.encode()[:58].decode(errors="ignore") + "_pkey"


def _targets(info: TableInfo, schema: pa.Schema, key: Sequence[str]) -> list[Target]:
    """Each data column's target in the existing table; every mismatch is an error before the COPY."""
    by_name = {c.name: c for c in info.columns}
    extra = [n for n in schema.names if n not in by_name]
    if extra:
        hints = []
        for n in extra:
            near = [c for c in by_name if c.lower() == n.lower()]
            if near:
                hints.append(f"{n!r} is not {near[0]!r}: names are matched exactly")
        raise ConfigurationError(
            f"the data has columns {extra} that table {info} does not have (its columns: "
            f"{list(by_name)}){'; ' + '; '.join(hints) if hints else ''}; drop them from the data "
            "or add them to the table")
    generated = [n for n in schema.names if by_name[n].generated]
    if generated:
        raise ConfigurationError(
            f"columns {generated} of table {info} are generated; drop them from the data")
    absent = [c.name for c in info.columns if c.name not in schema.names and not c.has_default
              and not c.generated]
    if absent:
        raise ConfigurationError(
            f"the data lacks columns {absent} of table {info}, which have no default; add them to "
            "the data (all missing values write NULLs)")
    if key and frozenset(key) not in info.unique_keys:
        keys = [sorted(k) for k in info.unique_keys] or "none"
        raise ConfigurationError(
            f"mode='upsert' with key={list(key)}: table {info} has no primary key or unique "
            f"constraint on exactly these columns (its unique keys: {keys}); ON CONFLICT needs one. "
            f"Add it with ALTER TABLE {info} ADD UNIQUE ({', '.join(key)})")
    return [_pgtypes.target(f, by_name[f.name].type_oid, by_name[f.name].typmod) for f in schema]
