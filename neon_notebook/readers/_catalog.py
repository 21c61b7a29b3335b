"""Column types -> kinds: the registry for builtin types, ``pg_type`` for the rest.

:class:`TypeResolver` asks the catalog once per read, for the OIDs the
registry does not know (domains, enums, extension types, arrays of those),
following domains and array elements down to what it knows. How it asks (a
psycopg connection, or an HTTP request) and how array literals are split are
given to it, so the HTTP transport resolves types without psycopg.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from . import _registry
from ._kinds import Array, Column, Kind, Text, make_kind

@dataclass
class _PgType:
    oid: int
    name: str
    typtype: str
    basetype: int
    basetypmod: int
    elem: int
    category: str
    delim: str


#: The catalog rows :class:`TypeResolver` reads, for ``$1``/``%s``: an array of OIDs.
CATALOG_QUERY = ("SELECT oid::int8, typname::text, typtype::text, typbasetype::int8, typtypmod,"
                 " typelem::int8, typcategory::text, typdelim::text"
                 " FROM pg_catalog.pg_type WHERE oid = ANY({}::oid[])")

#: ``lookup(oids)``: the catalog rows of those OIDs, as (oid, name, typtype, basetype,
#: basetypmod, elem, category, delim).
Lookup = Callable[[list[int]], Sequence[Sequence[Any]]]


@dataclass
class TypeResolver:
    """Maps (oid, typmod) to kinds, asking ``pg_type`` once for what isn't builtin.

    ``load_array(literal: bytes) -> list`` splits a text array literal (nested lists for
    several dimensions); ``encoding`` is the one its bytes are in.
    """

    lookup: Lookup
    settings: dict[str, str]
    load_array: Callable[[bytes], list]
    encoding: str = "utf-8"
    _catalog: dict[int, _PgType] = field(default_factory=dict)

    @classmethod
    def for_connection(cls, conn: Any, settings: dict[str, str]) -> TypeResolver:
        """A resolver asking over a psycopg connection, splitting arrays with psycopg's text[] loader."""
        from psycopg import pq

        def lookup(oids: list[int]) -> list[tuple]:
            cur = conn.cursor()
            cur.execute(CATALOG_QUERY.format("%s"), (oids,))
            return cur.fetchall()

        loader = conn.adapters.get_loader(1009, pq.Format.TEXT)(1009, conn)
        return cls(lookup, settings, loader.load, conn.info.encoding)

    def resolve(self, fields: Sequence[tuple[str, int, int]]) -> list[Column]:
        self._load_catalog({oid for _, oid, _ in fields})
        return [
            Column(name, oid, mod, self._kind(oid, mod), self._wire(oid))
            for name, oid, mod in fields
        ]

    def _known(self, oid: int) -> bool:
        return _registry.known(oid) or oid in self._catalog

    def _load_catalog(self, oids: set[int]) -> None:
        todo = {o for o in oids if not self._known(o)}
        for _ in range(8):  # domains over domains over arrays of enums...
            if not todo:
                return
            for row in self.lookup(sorted(todo)):
                self._catalog[int(row[0])] = _PgType(*row)
            found = [self._catalog[o] for o in todo if o in self._catalog]
            todo = set()
            for t in found:
                for o in (t.basetype, t.elem):
                    if o and not self._known(o):
                        todo.add(o)

    def _kind(self, oid: int, typmod: int, depth: int = 0) -> Kind:
        if depth > 8:
            return Text()
        row = _registry.builtin(oid)
        if row is not None:
            return make_kind(row, typmod, self.settings)
        element = _registry.array_element(oid)
        if element is not None:
            return self._array(self._kind(element, typmod, depth + 1), ",")
        t = self._catalog.get(oid)
        if t is None:
            return Text(pgname=f"oid {oid}")
        if t.typtype == "d":  # domain: its base type, with the domain's typmod
            kind = self._kind(t.basetype, t.basetypmod if t.basetypmod >= 0 else typmod, depth + 1)
            return kind
        if t.typtype == "e":
            return Text(pgname=t.name)
        if t.name in _registry.EXTENSIONS:
            return make_kind(_registry.EXTENSIONS[t.name], typmod, self.settings)
        if t.category == "A" and t.elem:
            return self._array(self._kind(t.elem, typmod, depth + 1), t.delim)
        return Text(pgname=t.name)

    def _wire(self, oid: int, depth: int = 0) -> str | None:
        """The binary COPY code of a type (the registry's): its base type's for a domain; enums send text."""
        row = _registry.builtin(oid)
        if row is not None:
            return row.wire
        t = self._catalog.get(oid)
        if t is None or depth > 8:
            return None
        if t.typtype == "d":
            return self._wire(t.basetype, depth + 1)
        if t.typtype == "e":
            return _registry.ENUM_WIRE
        extension = _registry.EXTENSIONS.get(t.name)
        return extension.wire if extension is not None else None

    def _array(self, element: Kind, delim: str) -> Kind:
        if delim != "," or isinstance(element, Array):
            return Text(pgname=f"{element.pgname}[]")
        return Array(element, self.load_array, self.encoding)


