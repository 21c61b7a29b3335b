"""IPython magics: ``%neon`` manages named connections and writes frames, ``%%sql`` runs a cell.

Load with ``%load_ext neon_notebook``. Then::

    %neon connect                       # "default", from DATABASE_URL / DIRECT_URL / .env
    %neon connect analytics postgresql://...   # another one, by name
    %neon connect web postgresql://... --http  # over Neon's SQL-over-HTTP endpoint
    %neon use analytics | warm [NAME] | status [NAME] | list | close [NAME]
    %neon write DF TABLE [--mode create|append|replace|upsert] [--key COLS] [--direct] [-c NAME]

    %%sql [-c NAME] [--direct] [--pandas | --polars | --arrow] [--preview N] [VAR | VAR <<]
    SELECT * FROM trips WHERE city = :city AND fare > :min_fare

``:name`` is a bound parameter taken from the notebook's variables: its value
travels as data (psycopg quotes it), never as SQL text. A colon is a parameter
only where SQL could not mean something else: not in ``::casts``, string
literals, quoted identifiers, dollar quotes or comments, and not right after a
name, number or bracket (``arr[1:n]``). With VAR the whole result is loaded
into that variable (pandas by default; ``VAR <<``, as jupysql and ipython-sql
spell it, means the same); without it, the cell shows the first rows
(``--preview``, 50) and cancels the rest of the query on the server. An empty
result shows its columns and "0 rows".

``%neon write df schema.table`` writes the notebook variable ``df`` (a pandas or
polars DataFrame, a pyarrow Table...) with ``Session.write``: all rows or none,
a progress bar towards the known row count, then the rows written; ``--key a,b``
names the upsert key (and the primary key of a table the write creates).

Errors from the server are shown as psql shows them (message, the cell's line
with a caret under the position, DETAIL, HINT) instead of a traceback; the cell
still fails, so "run all" stops there. Client-side errors (a closed session, a
statement the readers refuse, a value that cannot be sent) are one plain line,
and this package's warnings (a column read as text...) are ``WARNING:`` lines.
"""

from __future__ import annotations

import binascii
import contextlib
import functools
import re
import sys
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, get_args

import psycopg
from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import MagicArgumentParser, argument, magic_arguments, parse_argstring
from IPython.display import display
from psycopg import sql as pgsql
from psycopg.adapt import AdaptersMap
from psycopg.types.string import BytesDumper

from ..errors import NeonError
from .progress import progress_bar
from .._connect import connect
from ..session import Session, WriteMode
from .._sqltext import colon_parameters, original_offset
from ._env import in_notebook
from .status import status_text
from .widgets import shared_panel

PREVIEW_ROWS = 50
#: The output options of %%sql, in the order the usage names them; pandas is the default.
OUTPUT_KINDS = ("pandas", "polars", "arrow")

# -- :name parameters -----------------------------------------------------------


@dataclass(frozen=True)
class Placeholder:
    """Where a ``:name`` sits in the cell: ``start``/``end`` offsets and the name."""

    start: int
    end: int
    name: str


def bind_parameters(text: str, namespace: Mapping[str, Any]) -> tuple[str, dict[str, Any] | None, list[Placeholder]]:
    """The cell as psycopg SQL (``%(name)s``, literal ``%`` doubled), its params, the placeholders.

    With no ``:name`` in the cell the text is returned untouched and params is None.
    """
    out: list[str] = []
    found: list[Placeholder] = []
    pos = 0
    for start, end, name in colon_parameters(text):  # the readers' lexer: strings, comments... skipped
        if name not in namespace:
            raise UsageError(f":{name} in the cell names no variable of the notebook. Define {name}, "
                             f"or write ': {name}' if the colon is SQL.")
        out.append(text[pos:start].replace("%", "%%"))
        out.append(f"%({name})s")
        found.append(Placeholder(start, end, name))
        pos = end
    if not found:
        return text, None, []
    out.append(text[pos:].replace("%", "%%"))
    return "".join(out), {p.name: namespace[p.name] for p in found}, found


class _HexBytesDumper(BytesDumper):
    """bytea as a connection quotes it: hex, in a standard string (``'\\x0aff'``)."""

    def dump(self, obj: Any) -> bytes:
        return b"\\x" + binascii.hexlify(bytes(obj))

    def quote(self, obj: Any) -> bytes:
        return b"'" + self.dump(obj) + b"'"


class _ServerQuoting:
    """An adaptation context that quotes values as the readers' connections do.

    Without a connection psycopg writes bytea in the old escape format
    (`` E'\\\\000'``); with one (standard_conforming_strings on, the default
    since PostgreSQL 9.1) it writes hex. Every other type quotes the same either way.
    """

    connection = None

    def __init__(self) -> None:
        self.adapters = AdaptersMap(psycopg.adapters)
        for cls in (bytes, bytearray, memoryview):
            self.adapters.register_dumper(cls, _HexBytesDumper)


@functools.cache
def _server_quoting() -> _ServerQuoting:
    return _ServerQuoting()


def _literal_length(value: Any) -> int:
    """How many characters the server saw for ``value`` bound as a literal."""
    return len(pgsql.Literal(value).as_string(_server_quoting()))


def cell_offset(position: int, placeholders: list[Placeholder], params: Mapping[str, Any] | None) -> int:
    """Map a server error position (1-based, in the bound statement) to a 0-based cell offset.

    The readers bind parameters client-side, so the server saw each ``:name``
    as a literal; positions after it shift by the length difference.
    """
    edits = ((p.start, p.end, _literal_length(params[p.name]) if params else 0) for p in placeholders)
    return max(0, original_offset(position - 1, edits))


# -- showing errors ------------------------------------------------------------


class CellError(NeonError):
    """A failed ``%%sql`` cell; IPython shows its lines instead of a traceback."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines

    def _render_traceback_(self) -> list[str]:
        return self.lines


def error_lines(exc: BaseException, cell: str, placeholders: list[Placeholder],
                params: Mapping[str, Any] | None) -> list[str]:
    """psql-style lines for a driver or neon_notebook error."""
    diag = getattr(exc, "diag", None)
    primary = diag.message_primary if diag is not None else None
    if primary is None:  # no server message: a connection or client-side error, in plain words
        return [f"{type(exc).__name__}: {exc}"]
    severity = diag.severity or "ERROR"
    code = f" (SQLSTATE {diag.sqlstate})" if diag.sqlstate else ""
    lines = [f"{severity}:  {primary}{code}"]
    position = int(diag.statement_position or 0)
    edits = getattr(exc, "_nn_edits", ())  # the readers' rewrites of the bound text (SET -> SET LOCAL)
    if position and edits:
        position = original_offset(position - 1, ((start, end, len(new)) for start, end, new in edits)) + 1
    offset = cell_offset(position, placeholders, params) if position else -1
    if 0 <= offset <= len(cell):  # a position past the cell is in a text the readers rewrote: no caret
        line_start = cell.rfind("\n", 0, offset) + 1
        line_end = cell.find("\n", offset)
        number = cell.count("\n", 0, offset) + 1
        prefix = f"LINE {number}: "
        lines.append(prefix + cell[line_start:None if line_end < 0 else line_end])
        lines.append(" " * (len(prefix) + offset - line_start) + "^")
    if diag.message_detail:
        lines.append(f"DETAIL:  {diag.message_detail}")
    if diag.message_hint:
        lines.append(f"HINT:  {diag.message_hint}")
    return lines


# -- the magics ------------------------------------------------------------------


def _neon_parser() -> MagicArgumentParser:
    parser = MagicArgumentParser(prog="%neon")
    commands = parser.add_subparsers(dest="command", required=True)
    c = commands.add_parser("connect", prog="%neon connect")
    c.add_argument("words", nargs="*", metavar="[NAME] [URL]")
    c.add_argument("--direct-url", help="the direct endpoint's URL (default: DIRECT_URL or derived)")
    c.add_argument("--http", action="store_true", help="over Neon's SQL-over-HTTP endpoint instead of TCP")
    c.add_argument("--http-url", help="the /sql URL (derived for Neon hosts; e.g. LocalCompute.http_url)")
    w = commands.add_parser("warm", prog="%neon warm")
    w.add_argument("name", nargs="?")
    w.add_argument("--background", action="store_true", help="return at once; the compute wakes meanwhile")
    for command in ("status", "use", "close"):
        commands.add_parser(command, prog=f"%neon {command}").add_argument(
            "name", nargs=None if command == "use" else "?")
    commands.add_parser("list", prog="%neon list")
    wr = commands.add_parser("write", prog="%neon write")
    wr.add_argument("df", metavar="DF", help="the notebook variable to write (pandas, polars, Arrow)")
    wr.add_argument("table", metavar="TABLE", help="name or schema.name")
    wr.add_argument("--mode", choices=get_args(WriteMode), default="append",
                    help="append (default; creates a missing table), create, replace or upsert")
    wr.add_argument("--key", metavar="COLS", help="key columns, comma-separated (upsert; a new table's primary key)")
    wr.add_argument("--direct", action="store_true", help="use the direct endpoint instead of the pooler")
    wr.add_argument("-c", "--conn", metavar="NAME", help="connection to use (default: the current one)")
    return parser


def _key_columns(text: str | None) -> list[str] | None:
    """``--key a,b`` as ``["a", "b"]``; an empty name is refused."""
    if text is None:
        return None
    columns = [c.strip() for c in text.split(",")]
    if not all(columns):
        raise UsageError(f"--key {text!r}: give column names separated by commas, as in --key carrier,month")
    return columns


def _looks_like_url(word: str) -> bool:
    return "://" in word or "=" in word


# ``VAR <<`` (jupysql, ipython-sql): a name, maybe a space, then << standing alone.
_ASSIGN = re.compile(r"(?<!\S)(?:([^\W\d]\w*)\s*)?<<(?!\S)")


def _without_assignment(line: str) -> str:
    """The %%sql line with ``VAR <<`` written as plain ``VAR``."""
    m = _ASSIGN.search(line)
    if m is None:
        return line
    if m.group(1) is None:
        raise UsageError("<< needs a variable name before it, as in: %%sql df <<")
    return line[:m.start()] + m.group(1) + line[m.end():]


def _output_kind(args: Any) -> str:
    """The one output option given (pandas when none); two different ones are refused."""
    kinds = [kind for kind in OUTPUT_KINDS if getattr(args, kind)]
    if len(kinds) > 1:
        given = " ".join(f"--{kind}" for kind in kinds)
        raise UsageError(f"{given}: choose one of --pandas, --polars, --arrow (pandas is the default)")
    return kinds[0] if kinds else "pandas"


@magics_class
class NeonMagics(Magics):
    """``%neon`` and ``%%sql``; holds this shell's named sessions."""

    def __init__(self, shell: Any) -> None:
        super().__init__(shell)
        self.sessions: dict[str, Session] = {}
        self.current: str | None = None
        self._parser = _neon_parser()

    def session(self, name: str | None = None) -> Session:
        """The session called ``name`` (default: the current one)."""
        if not self.sessions:
            raise UsageError("No connection yet: run %neon connect (it reads DATABASE_URL) first.")
        name = name or self.current
        if name not in self.sessions:
            raise UsageError(f"No connection named {name!r}; %neon list shows them.")
        return self.sessions[name]

    @line_magic
    def neon(self, line: str) -> None:
        """Named Neon connections.

        %neon connect [NAME] [URL] [--direct-url URL] [--http [--http-url URL]]  (NAME: default; URL: DATABASE_URL/.env)
        %neon use NAME          make NAME the connection %%sql uses (or a Session variable NAME)
        %neon warm [NAME] [--background]   wake the compute and wait until it answers
        %neon status [NAME]     live panel in a notebook, text elsewhere
        %neon list              named connections (no passwords)
        %neon close [NAME]      close a connection's pools and forget it
        %neon write DF TABLE [--mode create|append|replace|upsert] [--key COLS] [--direct] [-c NAME]
                                write the variable DF (a DataFrame or Arrow table) into TABLE
                                (name or schema.name), all rows or none; --mode append by default
        """
        args = self._parser.parse_argstring(line.strip() or "status")
        getattr(self, f"_{args.command}")(args)

    def _connect(self, args: Any) -> None:
        words = list(args.words)
        if len(words) > 2 or (len(words) == 2 and not _looks_like_url(words[1])):
            raise UsageError("usage: %neon connect [NAME] [URL] [--direct-url URL] [--http [--http-url URL]]")
        url = words.pop() if words and _looks_like_url(words[-1]) else None
        name = words[0] if words else "default"
        try:
            http = args.http or args.http_url is not None
            session = connect(url, direct_url=args.direct_url, transport="http" if http else "tcp",
                              http_url=args.http_url)
        except NeonError as exc:
            raise CellError([f"{type(exc).__name__}: {exc}"]) from None
        if name in self.sessions:
            self.sessions.pop(name).close()
        self.sessions[name] = session
        if self.current is None or self.current == name:
            self.current = name
        over = " over HTTP" if http else ""
        print(f"{name}: {session.status().endpoints}{over}")

    def _use(self, args: Any) -> None:
        candidate = self.shell.user_ns.get(args.name)
        if args.name not in self.sessions and isinstance(candidate, Session):
            self.sessions[args.name] = candidate  # a Session made in Python: %neon use session
        self.session(args.name)
        self.current = args.name

    def _warm(self, args: Any) -> None:
        session = self.session(args.name)
        if args.background:
            session.warm_up(background=True)
            print("waking the compute in the background")
            return
        try:
            print(session._redact(str(session.warm_up())))
        except (NeonError, psycopg.Error) as exc:
            raise CellError([session._redact(line) for line in error_lines(exc, "", [], None)]) from exc

    def _status(self, args: Any) -> None:
        session = self.session(args.name)
        if in_notebook():
            display(shared_panel(session))
        else:
            print(status_text(session.status()))

    def _list(self, args: Any) -> None:
        if not self.sessions:
            print("no connections; %neon connect makes one")
        for name, session in self.sessions.items():
            marker = "*" if name == self.current else " "
            status = session.status()
            print(f"{marker} {name}: {status.endpoints} [{status.state}]")

    def _close(self, args: Any) -> None:
        name = args.name or self.current
        self.session(name).close()
        del self.sessions[name]
        if self.current == name:
            self.current = next(iter(self.sessions), None)
        print(f"closed {name}")

    def _write(self, args: Any) -> None:
        if args.df not in self.shell.user_ns:
            raise UsageError(f"{args.df!r} names no variable of the notebook: %neon write DF TABLE "
                             "takes the name of a DataFrame (pandas, polars) or pyarrow Table")
        key = _key_columns(args.key)
        session = self.session(args.conn)
        try:
            with _warnings_as_notices(session), progress_bar(label=args.table, kind="write") as bar:
                rows = session.write(self.shell.user_ns[args.df], args.table, mode=args.mode, key=key,
                                     direct=args.direct, progress=bar)
        except (NeonError, psycopg.Error, ValueError, TypeError) as exc:
            raise CellError([session._redact(line) for line in error_lines(exc, "", [], None)]) from exc
        where = session.last_query.write  # set by the write: "append into public.t"
        print(f"{args.df}: {rows:,} row{'' if rows == 1 else 's'} written ({where})")

    @magic_arguments()
    @argument("var", nargs="?", help="load the whole result into this variable")
    @argument("-c", "--conn", metavar="NAME", help="connection to use (default: the current one)")
    @argument("--direct", action="store_true", help="use the direct endpoint instead of the pooler")
    @argument("--pandas", action="store_true", help="pandas DataFrame (default)")
    @argument("--polars", action="store_true", help="polars DataFrame")
    @argument("--arrow", action="store_true", help="pyarrow Table")
    @argument("--preview", type=int, default=PREVIEW_ROWS, metavar="N",
              help=f"rows to show without VAR (default {PREVIEW_ROWS})")
    @cell_magic
    def sql(self, line: str, cell: str) -> Any:
        """Run the cell's SQL; ``:name`` binds the notebook variable ``name`` as a parameter.

        ``VAR <<`` is accepted for ``VAR``, as jupysql and ipython-sql spell it.
        """
        args = parse_argstring(self.sql, _without_assignment(line))
        if args.var is not None and not args.var.isidentifier():
            raise UsageError(f"{args.var!r} is not a valid variable name")
        if args.preview < 0:
            raise UsageError("--preview needs a number of rows, 0 or more")
        kind = _output_kind(args)
        session = self.session(args.conn)
        text, params, placeholders = bind_parameters(cell, self.shell.user_ns)
        try:
            with _warnings_as_notices(session):
                result = self._run(session, text, params, kind, args)
        except (NeonError, psycopg.Error, ValueError, TypeError) as exc:
            lines = error_lines(exc, cell, placeholders, params)
            raise CellError([session._redact(line) for line in lines]) from exc
        if args.var is None:
            return result  # the preview
        self.shell.user_ns[args.var] = result
        print(f"{args.var}: {result.shape[0]:,} rows × {result.shape[1]} columns" if kind != "arrow"
              else f"{args.var}: {result.num_rows:,} rows × {result.num_columns} columns")
        return None

    def _run(self, session: Session, text: str, params: dict[str, Any] | None, kind: str, args: Any) -> Any:
        """The preview (no VAR) or the whole result (VAR), as ``kind``."""
        if args.var is None:
            return _preview(session, text, params, kind, args.preview, args.direct)
        with progress_bar(label=args.var) as bar:
            read = {"pandas": session.read_pandas, "polars": session.read_polars,
                    "arrow": session.read_arrow}[kind]
            return read(text, params, direct=args.direct, progress=bar)


@contextlib.contextmanager
def _warnings_as_notices(session: Session) -> Iterator[None]:
    """Show this package's warnings as psql shows notices (``WARNING:  ...``), not as file:line.

    They are printed when the cell ends, before its error if it fails; other
    warnings are shown as usual.
    """
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            yield
    finally:
        notices = []
        for w in caught:
            if w.category.__module__.split(".")[0] == __package__.split(".")[0]:
                notices.append(str(w.message))
            else:
                warnings.showwarning(w.message, w.category, w.filename, w.lineno, w.file, w.line)
        for message in dict.fromkeys(notices):
            print(f"WARNING:  {session._redact(message)}", file=sys.stderr)


def _preview(session: Session, text: str, params: dict[str, Any] | None, kind: str, rows: int,
             direct: bool) -> Any:
    """The first ``rows`` rows as a frame; stops the query there (closing the stream cancels it).

    An empty result still shows its columns; a statement without a result set
    (DDL, INSERT without RETURNING) shows nothing.
    """
    import pyarrow as pa

    from ..readers import to_pandas, to_polars

    batches: list[pa.RecordBatch] = []
    got = 0
    schema: pa.Schema | None = None
    stream = session.iter_batches(text, params, batch_rows=rows + 1, direct=direct)
    with contextlib.closing(stream):
        while got <= rows:
            try:
                batch = next(stream)
            except StopIteration as end:  # the stream returns the result's schema
                schema = end.value
                break
            batches.append(batch)
            got += batch.num_rows
    if not batches and not (schema and schema.names):  # no result set at all
        print("done; no rows returned")
        return None
    table = pa.Table.from_batches(batches, schema=schema).slice(0, rows)
    if got > rows:
        print(f"showing first {rows} rows; assign to a variable to load all (%%sql VAR)")
    elif got == 0:
        print("0 rows")
    return {"pandas": to_pandas, "polars": to_polars, "arrow": lambda t: t}[kind](table)


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext neon_notebook``: register ``%neon`` and ``%%sql``."""
    ipython.register_magics(NeonMagics)
