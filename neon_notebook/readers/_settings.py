"""The output settings PostgreSQL's text follows, and the query that reads them (no numpy, no psycopg).

Apart from :mod:`._output` (what a read does with them) so that the lexer's guard and
the HTTP transport, which run in Pyodide without numpy, can name them.
"""

from __future__ import annotations

__all__ = ["READ_SETTINGS", "SETTINGS_READ"]

#: Settings that shape PostgreSQL's text output, read at the start of a read.
SETTINGS_READ = ("TimeZone", "DateStyle", "IntervalStyle", "extra_float_digits", "bytea_output")

#: One query for the output settings the parsers depend on (at the start of a read, and
#: after a text that may have changed them).
READ_SETTINGS = "SELECT " + ", ".join(f"current_setting('{k}')" for k in SETTINGS_READ)
