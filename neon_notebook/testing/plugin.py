"""pytest plugin: a database for the tests, a LocalCompute by default or a real one by URL.

Loaded in every pytest run once the package is installed (entry point
``pytest11``, name ``neon_notebook``), so it imports nothing heavy until a
fixture is used. Fixtures:

- ``neon_session`` (function): a ``neon_notebook`` Session on the run's database,
  closed after the test; the database is shared by the whole run, so a test
  names its tables uniquely or drops them;
- ``neon_make_session`` (function): ``make(url=None, **connect_kwargs)``, more
  sessions (on the run's database by default), closed after the test;
- ``neon_direct_url`` / ``neon_pooled_url`` (session): the run's endpoints; the
  pooled one skips when there is no pooler (PgBouncer missing, or one URL given);
- ``neon_compute`` (session): the run's LocalCompute itself, with its controls
  (``suspend()``, ``crash()``, ``cut_after()``, ``latency()``...);
- ``neon_make_compute`` (function): ``make(**LocalCompute_kwargs)``, computes with
  their own lifecycle, closed after the test.

Options: ``--neon-url`` (``NEON_TEST_URL``) runs the database tests against that
database instead, e.g. a Neon branch's pooled connection string, with
``--neon-direct-url`` (``NEON_TEST_DIRECT_URL``) as Prisma's ``DIRECT_URL``;
tests needing the LocalCompute itself then skip. ``--neon-pg-bin``
(``NEON_TEST_PG_BIN``): PostgreSQL server binaries for the local compute.

Markers, added at collection from the fixtures a test uses (or set by hand):
``db`` (uses a database; ``pytest -m "not db"`` runs without any server),
``pgbouncer`` (needs the pooled endpoint), ``local_compute`` (needs a LocalCompute).
The database starts with the first test that uses it; if it cannot start, the
run ends there with one message.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from neon_notebook import Session
    from neon_notebook.local import LocalCompute

    from ._database import Database
    from ._options import Options

#: Fixtures that need the local compute; the rest of DB_FIXTURES run on any database.
LOCAL_FIXTURES = frozenset({"neon_compute", "neon_make_compute"})
POOLED_FIXTURES = frozenset({"neon_pooled_url"})
# neon_make_session is not one: a test may make sessions on URLs of its own (e.g. bad ones);
# make() with no URL starts the run's database, and a test not marked db then fails.
DB_FIXTURES = LOCAL_FIXTURES | POOLED_FIXTURES | {"_neon_database", "neon_direct_url", "neon_session"}

MARKERS = {
    "db": "uses a database (added to tests using the neon_* database fixtures); "
          "-m 'not db' runs the tests that need no server",
    "pgbouncer": "needs the pooled endpoint (PgBouncer); skips without one",
    "local_compute": "needs the local compute itself (its fault controls, or its own computes); "
                     "skips under --neon-url",
}
NEEDS_LOCAL = "needs the local compute's controls (suspend, crash, cut, latency, own computes); this run uses --neon-url"
_STATE = pytest.StashKey["_State"]()


class _State:
    """The run's options, and the test being set up (to check that a database user is marked db)."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.item: pytest.Item | None = None
        self.started_by: pytest.Item | None = None  # the test during which the database started

    def check_started(self, item: pytest.Item) -> None:
        """Fail ``item`` if it started the run's database (asking at run time) without the db marker."""
        if self.started_by is item:
            self.check_marked("the database")

    def check_marked(self, what: str) -> None:
        if self.item is not None and self.item.get_closest_marker("db") is None:
            pytest.fail(
                f"{self.item.nodeid} uses {what} without the db marker, so `-m \"not db\"` would "
                "start a server: take the fixture as an argument (the plugin then marks the test) "
                "or mark the test @pytest.mark.db.", pytrace=False)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("neon_notebook", "neon_notebook: the database of the tests")
    group.addoption("--neon-url", default=os.environ.get("NEON_TEST_URL") or None, metavar="URL",
                    help="run the database tests against this database (a Neon branch's pooled URL, "
                         "or any Postgres) instead of a local compute; default $NEON_TEST_URL")
    group.addoption("--neon-direct-url", default=os.environ.get("NEON_TEST_DIRECT_URL") or None,
                    metavar="URL", help="its direct URL, when --neon-url is the pooled one of a "
                                        "database that is not Neon's; default $NEON_TEST_DIRECT_URL")
    group.addoption("--neon-pg-bin", default=os.environ.get("NEON_TEST_PG_BIN") or None, metavar="DIR",
                    help="PostgreSQL server binaries for the local compute (default: the embedded "
                         "PostgreSQL); default $NEON_TEST_PG_BIN")


def pytest_configure(config: pytest.Config) -> None:
    from ._options import Options

    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")
    config.stash[_STATE] = _State(Options(
        url=config.getoption("neon_url"), direct_url=config.getoption("neon_direct_url"),
        pg_bin=config.getoption("neon_pg_bin")))


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests by the fixtures they use, before ``-m`` selects (hence tryfirst)."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if names & LOCAL_FIXTURES:
            item.add_marker("local_compute")
        if names & POOLED_FIXTURES:
            item.add_marker("pgbouncer")
        if names & DB_FIXTURES or item.get_closest_marker("pgbouncer") or item.get_closest_marker("local_compute"):
            item.add_marker("db")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip by marker before any fixture starts a server."""
    state = item.config.stash[_STATE]
    state.item = item
    if item.get_closest_marker("local_compute") and state.options.given:
        pytest.skip(NEEDS_LOCAL)
    if item.get_closest_marker("pgbouncer") and (reason := state.options.pooler_missing()):
        pytest.skip(reason)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """Fail a test not marked db that started the database (its fixtures or its body asked at run time)."""
    yield
    item.config.stash[_STATE].check_started(item)


def pytest_runtest_teardown(item: pytest.Item) -> None:
    item.config.stash[_STATE].item = None


@pytest.fixture(scope="session")
def _neon_database(request: pytest.FixtureRequest) -> Iterator[Database]:
    """The run's database, started and warmed up once (the run ends if it cannot start)."""
    from ._database import start

    request.config.stash[_STATE].started_by = request.config.stash[_STATE].item
    database = start(request.config.stash[_STATE].options)
    yield database
    database.close()


@pytest.fixture(scope="session")
def neon_direct_url(_neon_database: Database) -> str:
    """URL of the run's direct endpoint."""
    return _neon_database.direct_url


@pytest.fixture(scope="session")
def neon_pooled_url(request: pytest.FixtureRequest, _neon_database: Database) -> str:
    """URL of the run's pooled endpoint (PgBouncer, transaction mode); skips when there is none."""
    if _neon_database.pooled_url is None:
        pytest.skip(request.config.stash[_STATE].options.pooler_missing() or "no pooled endpoint")
    return _neon_database.pooled_url


@pytest.fixture(scope="session")
def neon_compute(_neon_database: Database) -> LocalCompute:
    """The run's LocalCompute (never suspends on its own); skips under --neon-url."""
    if _neon_database.compute is None:
        pytest.skip(NEEDS_LOCAL)
    return _neon_database.compute


@pytest.fixture
def neon_make_session(request: pytest.FixtureRequest) -> Iterator[Callable[..., Session]]:
    """Factory ``make(url=None, **connect_kwargs)``: Sessions closed after the test.

    With no ``url``, on the run's database; else ``neon_notebook.connect(url, **kwargs)``
    with ``suspend_after=None`` unless given.
    """
    made: list[Session] = []

    def make(url: str | None = None, **kwargs: Any) -> Session:
        import neon_notebook as nn

        if url is None:
            session = request.getfixturevalue("_neon_database").connect(**kwargs)
        else:
            kwargs.setdefault("suspend_after", None)
            session = nn.connect(url, **kwargs)
        made.append(session)
        return session

    yield make
    for session in made:
        session.close()


@pytest.fixture
def neon_session(_neon_database: Database) -> Iterator[Session]:
    """A Session on the run's database, new for each test and closed after it."""
    with _neon_database.connect() as session:
        yield session


@pytest.fixture
def neon_make_compute(request: pytest.FixtureRequest) -> Iterator[Callable[..., LocalCompute]]:
    """Factory ``make(**LocalCompute_kwargs)``: computes with their own lifecycle, closed after the test.

    Needs the local compute, so it skips under --neon-url. The run's compute starts
    first (the one warm-up: a machine that cannot start computes ends the run there);
    ``monitor_interval`` defaults to 0.2 s (suspensions seen sooner than LocalCompute's 0.5 s).
    """
    from neon_notebook.local import LocalCompute

    state = request.config.stash[_STATE]
    if state.options.given:
        pytest.skip(NEEDS_LOCAL)
    request.getfixturevalue("_neon_database")
    made: list[LocalCompute] = []

    def make(**kwargs: Any) -> LocalCompute:
        state.check_marked("a LocalCompute")
        kwargs.setdefault("monitor_interval", 0.2)
        if state.options.pg_bin is not None:
            kwargs.setdefault("pg_bin", state.options.pg_bin)
        compute = LocalCompute(**kwargs)
        made.append(compute)
        return compute

    yield make
    for compute in made:
        compute.close()
