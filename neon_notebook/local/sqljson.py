"""Neon's JSON conversions for SQL over HTTP (a port of proxy/src/serverless/json.rs).

Parameters in: JSON values to PostgreSQL text as serde_json writes them (objects
with sorted keys, floats by ryu, arrays as array literals). Values out, in JSON
mode: booleans, int2/int4 and finite floats as JSON, json/jsonb embedded, arrays
(Neon's array-literal parser) as JSON arrays, everything else as strings.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from .pgclient import PgConnection

# A JSON string as serde_json writes it (== json.dumps(s, ensure_ascii=False)), without dumps' overhead.
dumps = json.encoder.encode_basestring  # type: ignore[attr-defined]


# -- parameters in (json_to_pg_text) ---------------------------------------------------------
def ryu(x: float) -> str:
    """A float as Rust's ryu writes it (shortest round-trip digits, ryu's layout)."""
    if x == 0:
        return "-0.0" if math.copysign(1, x) < 0 else "0.0"
    sign = "-" if x < 0 else ""
    text = repr(abs(x))
    mantissa, _, exp = text.partition("e")
    whole, _, frac = mantissa.partition(".")
    frac = "" if frac == "0" and not exp else frac
    digits = (whole + frac).lstrip("0")
    k = int(exp or 0) - len(frac)
    stripped = digits.rstrip("0")
    k += len(digits) - len(stripped)
    digits = stripped
    n = len(digits)
    kk = n + k
    if 0 <= k and kk <= 16:
        out = digits + "0" * k + ".0"
    elif 0 < kk <= 16:
        out = digits[:kk] + "." + digits[kk:]
    elif -5 < kk <= 0:
        out = "0." + "0" * -kk + digits
    elif n == 1:
        out = f"{digits}e{kk - 1}"
    else:
        out = f"{digits[0]}.{digits[1:]}e{kk - 1}"
    return sign + out


def _number(v: int | float) -> str:
    if isinstance(v, int):
        return str(v) if -(1 << 63) <= v < (1 << 64) else ryu(float(v))  # serde: beyond u64 -> f64
    return ryu(v)


def serde_text(v: Any) -> str:
    """``Value::to_string()``: compact, object keys sorted (no preserve_order in Neon's build)."""
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, (int, float)):
        return _number(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ",".join(map(serde_text, v)) + "]"
    return "{" + ",".join(json.dumps(k, ensure_ascii=False) + ":" + serde_text(v[k]) for k in sorted(v)) + "}"


def param_text(v: Any) -> str | None:
    if isinstance(v, list):
        return _array_param(v)
    if v is None or isinstance(v, str):
        return v
    return serde_text(v)


def _array_param(v: Any) -> str:
    if v is None:
        return "NULL"
    if isinstance(v, list):
        return "{" + ",".join(map(_array_param, v)) + "}"
    if isinstance(v, dict):
        return json.dumps(serde_text(v), ensure_ascii=False)
    return serde_text(v)


# -- values out (json.rs pg_text_to_json) -----------------------------------------------
class TypeKinds:
    """Which result types are arrays (and of what), as tokio-postgres knows them.

    Built-in types (OID < 16384) as in postgres-types' table (category ``A``) and
    cached for the daemon's life; others looked up on the request's connection as
    tokio-postgres' typeinfo query does (enums, domains, pseudo types are not arrays).
    """

    _SQL = ("select oid, typcategory = 'A', typtype::text, typbasetype, typelem from pg_catalog.pg_type "
            "where oid = any($1::oid[])")

    def __init__(self) -> None:
        self._builtin: dict[int, int | None] = {}

    def element_types(self, conn: PgConnection, oids: set[int]) -> dict[int, int | None]:
        known = {oid: self._builtin[oid] for oid in oids if oid in self._builtin}
        missing = oids - known.keys()
        while missing:
            rows = conn.fetch("nn_typeinfo", self._SQL, ["{" + ",".join(map(str, sorted(missing))) + "}"])
            found = {}
            for oid, category, typtype, base, elem in rows:
                oid, elem = int(oid), int(elem)
                if oid < 16384:
                    found[oid] = elem if category == "t" else None
                    self._builtin[oid] = found[oid]
                else:
                    array = typtype not in ("e", "p") and base == "0" and elem != 0
                    found[oid] = elem if array else None
            known.update(found)
            for oid in missing - found.keys():
                known[oid] = None
            missing = {e for e in known.values() if e is not None and e not in known}
        return known


class JsonConversionError(Exception):
    """PostgreSQL's text did not parse as its type claims (Neon: 500 ``could not parse postgres response``)."""


def value_to_json(text: str, oid: int, elements: dict[int, int | None]) -> str:
    """One non-NULL value in JSON mode."""
    elem = elements.get(oid)
    if elem is not None:
        return _array_to_json(text, elem, elements)
    if oid == 16:
        return "true" if text == "t" else "false"
    try:
        if oid in (21, 23):
            n = int(text)
            if not -(1 << 31) <= n < (1 << 31):
                raise ValueError("number too large to fit in target type")
            return str(n)
        if oid in (700, 701):
            f = float(text)
            return ryu(f) if math.isfinite(f) else dumps(text)
    except ValueError as exc:
        raise JsonConversionError(str(exc)) from None
    if oid in (114, 3802):
        return text
    return dumps(text)


def _array_to_json(text: str, elem: int, elements: dict[int, int | None]) -> str:
    if text.startswith("["):
        bounds, eq, rest = text.partition("=")
        if not eq:
            raise JsonConversionError("unbalanced array")
        text = rest
    out: list[str] = []
    rest = _array_inner(text.lstrip(), elem, elements, out)
    if rest:
        raise JsonConversionError("unbalanced array")
    return out[0]


def _array_inner(s: str, elem: int, elements: dict[int, int | None], out: list[str]) -> str:
    if not s.startswith("{"):
        raise JsonConversionError("unbalanced array")
    s = s[1:]
    items: list[str] = []
    while True:
        s = _array_item(s, elem, elements, items)
        if s.startswith(","):
            s = s[1:]
        else:
            break
    if not s.startswith("}"):
        raise JsonConversionError("unbalanced array")
    out.append("[" + ",".join(items) + "]")
    return s[1:].lstrip()


def _array_item(s: str, elem: int, elements: dict[int, int | None], items: list[str]) -> str:
    s = s.lstrip()
    if s.startswith("{"):
        return _array_inner(s, elem, elements, items)
    if s.startswith('"'):
        s = s[1:]
        chunks = []
        while True:
            m = re.search(r'[\\"]', s)
            if m is None:
                raise JsonConversionError("unbalanced quoted string")
            chunks.append(s[:m.start()])
            if s[m.start()] == '"':
                s = s[m.start() + 1:].lstrip()
                break
            if m.start() + 1 >= len(s):
                raise JsonConversionError("unbalanced quoted string")
            chunks.append(s[m.start() + 1])
            s = s[m.start() + 2:]
        items.append(value_to_json("".join(chunks), elem, elements))
        return s
    m = re.search(r"[,}]", s)
    if m is None:
        raise JsonConversionError("unbalanced array")
    item = s[:m.start()].rstrip()
    items.append("null" if item == "NULL" else value_to_json(item, elem, elements))
    return s[m.start():]
