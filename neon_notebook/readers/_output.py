"""The session's output settings a read depends on, and what a read changes of them.

PostgreSQL's text output follows ``DateStyle``, ``IntervalStyle``,
``extra_float_digits``, ``bytea_output`` and ``TimeZone``.  A read reads them
at its start (:data:`READ_SETTINGS`, in the same round trip as its ``BEGIN``);
:func:`output_fixes` names the few values the parsers don't read, which the
read overrides with ``SET LOCAL``; :func:`affected_by` says which of them a
column's kind depends on (a text that sets one itself is checked against it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from ..errors import OutputSettingChanged
from ._settings import READ_SETTINGS, SETTINGS_READ
from ._kinds import Array, Bytea, Column, Date, Interval, Kind, Number, Timestamp

if TYPE_CHECKING:  # pragma: no cover
    from ._guard import Text



def output_fixes(settings: dict[str, str]) -> dict[str, str]:
    """The SET LOCAL changes a read needs; none with PostgreSQL's defaults.

    The query itself runs under the session's settings (``now()::date`` keeps
    meaning the session's date).  Only output formats the parsers don't read
    are changed, for the read's transaction: a non-ISO ``DateStyle`` output
    (its field order, which governs input, is kept), ``IntervalStyle`` other
    than ``postgres``/``iso_8601``, ``extra_float_digits`` <= 0 (rounded
    floats) and ``bytea_output = escape``.  The same text casts inside the
    query see the change -- documented in TYPES.md.
    """
    fixes = {}
    style = settings.get("DateStyle", "ISO, MDY")
    parts = [p.strip() for p in style.split(",")]
    if parts[0].upper() != "ISO":
        order = next((p for p in parts if p.upper() in ("MDY", "DMY", "YMD")), None)
        if order is None:  # "German" implies DMY, "SQL"/"Postgres" alone MDY
            order = "DMY" if parts[0].upper() == "GERMAN" else "MDY"
        fixes["DateStyle"] = f"ISO, {order}"
    if settings.get("IntervalStyle", "postgres") not in ("postgres", "iso_8601"):
        fixes["IntervalStyle"] = "postgres"
    try:
        if int(settings.get("extra_float_digits", "1")) <= 0:
            fixes["extra_float_digits"] = "1"
    except ValueError:
        fixes["extra_float_digits"] = "1"
    if settings.get("bytea_output", "hex") != "hex":
        fixes["bytea_output"] = "hex"
    return fixes



#: The values of each setting the parsers read, for messages.
READABLE = {
    "extra_float_digits": "1 or more; 0 or less rounds floats",
    "DateStyle": "ISO, with any field order",
    "IntervalStyle": "postgres or iso_8601",
    "bytea_output": "hex",
    "TimeZone": "any",
}


def affected_by(kind: Kind) -> tuple[str, ...]:
    """The output settings (``SETTINGS_READ`` names) that change how a kind's text must be read."""
    while isinstance(kind, Array):
        kind = kind.element
    if isinstance(kind, Number) and kind.pgname in ("float4", "float8"):
        return ("extra_float_digits",)
    if isinstance(kind, (Date, Timestamp)):
        return ("DateStyle",)
    if isinstance(kind, Interval):
        return ("IntervalStyle",)
    if isinstance(kind, Bytea):
        return ("bytea_output",)
    return ()


def check_output(text: Text | None, columns: Sequence[Column] | None, settings: dict[str, str],
                 index: int, results: int) -> None:
    """Refuse columns whose text the text's own SET made unreadable (or ambiguous).

    ``settings``: those the rows were printed under; ``index``: the statement
    whose rows are read, of ``results`` results.
    """
    if text is None:
        return
    changes = text.output_changes
    if not changes:
        return
    statements = text.statements
    # One result per statement: a change after the statement whose rows
    # are read leaves the rows' format unknown.
    ambiguous = len(statements) != results or any(i > index for i in changes)
    unreadable = output_fixes(settings)
    unreadable.pop("bytea_output", None)  # escape output is decoded too
    for col in columns or []:
        for name in affected_by(col.kind):
            if name in unreadable:
                raise OutputSettingChanged(
                    f"The query text sets {name} to {settings[name]!r}, in which PostgreSQL's "
                    f"text output of column {col.name!r} ({col.kind.pgname}) cannot be read "
                    f"exactly. Leave {name} at a value the readers read ({READABLE[name]}), "
                    "or cast the column to text in SQL."
                )
            if ambiguous:
                raise OutputSettingChanged(
                    f"The query text changes an output setting ({name} or another) after or "
                    f"around the statement whose rows are read, so the format of column "
                    f"{col.name!r} ({col.kind.pgname}) is not known. Put SET statements "
                    "before the query."
                )
