"""What one write does to the database, by mode: the statements around its COPY.

Every plan runs inside one transaction:

- ``create`` (the table must not exist) and any mode on a missing table:
  ``CREATE TABLE``, then ``COPY … FREEZE`` into it (the table is new in this
  transaction, so its rows need no later freezing); with ``key=``, the primary
  key is added after the COPY (one index build);
- ``append``: ``COPY`` into the existing table, each value encoded into its
  column's own type;
- ``replace``: ``CREATE TABLE`` a staging table beside it, ``COPY`` into that, then
  ``DROP TABLE`` the old one and rename the new one into place: readers see the
  old table or the new one, never an empty or half one, and the old one is
  locked only for the swap;
- ``upsert``: ``COPY`` into a temporary table (``ON COMMIT DROP``, safe through
  PgBouncer), then ``INSERT … SELECT … ON CONFLICT (key) DO UPDATE`` (``DO
  NOTHING`` when the data has only the key).

Data repeating its ``key=`` is refused whatever the mode (a ``UniqueViolation``
naming the key and its value): which of the rows would win is a guess. No plan
uses a subtransaction, so every row and catalog change carries the write's own
transaction id (what verifying a COMMIT whose answer was lost relies on).

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
from ._table import MAX_IDENTIFIER, TableInfo, TableName

MODES = ("create", "append", "replace", "upsert")
#: The name of the unique index on an upsert's staged rows: the error reads "could not create
#: unique index "the data repeats a key"", and its detail names the key ("Key (id)=(2) is duplicated").
REPEATED_KEY = "the data repeats a key"


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
    if not names:
        raise ConfigurationError("the data has no columns: there is nothing to write")
    unfit = [n for n in names if not n or "\x00" in n or len(n.encode()) > MAX_IDENTIFIER]
    if unfit:
        raise ConfigurationError(
            f"the data has column names PostgreSQL cannot hold as given: {unfit}; a name is 1 to "
            f"{MAX_IDENTIFIER} bytes (a longer one would be truncated) without NUL characters; rename them")
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
        made = _create(staging, schema, key, created=False, constraint=_pkey(staged))
        made.after += [sql.SQL("DROP TABLE {}").format(info.identifier),
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
    # A unique index on the staged rows refuses data repeating a key, naming it, before the
    # INSERT (whose own error would not name it, and DO NOTHING would not fail at all).
    unique = sql.SQL("CREATE UNIQUE INDEX {} ON {} ({})").format(
        sql.Identifier(REPEATED_KEY), stage, sql.SQL(", ").join(map(sql.Identifier, key)))
    return Plan([sql.SQL("CREATE TEMPORARY TABLE {} ({}) ON COMMIT DROP").format(stage, definition)],
                _copy(stage, columns, freeze=False), targets, [unique, insert])


def _create(table: sql.Identifier, schema: pa.Schema, key: Sequence[str], *, created: bool,
            constraint: str | None = None) -> Plan:
    """CREATE TABLE and COPY; with ``key``, its primary key (named ``constraint``) added after.

    The key is indexed once the rows are in: one index build, faster than one insertion
    per row, and data repeating a key is told as such ("Key (id)=(2) is duplicated").
    """
    targets = _pgtypes.create_targets(schema)
    columns = sql.SQL(", ").join(map(sql.Identifier, schema.names))
    made = Plan([_pgtypes.create_table(table, schema, targets)], _copy(table, columns, freeze=True),
                targets, created=created)
    if key:
        named = sql.SQL("") if constraint is None else sql.SQL("CONSTRAINT {} ").format(
            sql.Identifier(constraint))
        made.after = [sql.SQL("ALTER TABLE {} ADD {}PRIMARY KEY ({})").format(
            table, named, sql.SQL(", ").join(map(sql.Identifier, key)))]
    return made


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
        add = sql.SQL("ALTER TABLE {} ADD UNIQUE ({})").format(
            info.identifier, sql.SQL(", ").join(map(sql.Identifier, key))).as_string(None)
        raise ConfigurationError(
            f"mode='upsert' with key={list(key)}: table {info} has no primary key or unique "
            f"constraint on exactly these columns (its unique keys: {keys}; partial, deferrable "
            f"and expression indexes do not count); ON CONFLICT needs one. Add it with {add}")
    return [_pgtypes.target(f, by_name[f.name].type_oid, by_name[f.name].typmod, by_name[f.name].sql_type)
            for f in schema]
