"""Neon/Prisma URL parsing, endpoint derivation, .env loading and redaction."""

from __future__ import annotations

from urllib.parse import quote

import psycopg
import pytest
from hypothesis import given, settings as hsettings, strategies as st
from psycopg.conninfo import conninfo_to_dict

from neon_notebook.errors import ConfigurationError
from neon_notebook._config import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_POOL_SIZE,
    DEFAULT_POOL_TIMEOUT,
    DEFAULT_WAKE_TIMEOUT,
    OPTIONS,
    UNSET,
    Settings,
    resolve,
)
from neon_notebook._endpoint import Endpoint, summary
from neon_notebook._redact import redact, redact_url
from neon_notebook._urls import LIBPQ_KEYWORDS, libpq_uri

SECRET = "Sup3rS3cret"
POOLED = "ep-cool-darkness-123456-pooler.c-2.us-east-2.aws.neon.tech"
DIRECT = "ep-cool-darkness-123456.c-2.us-east-2.aws.neon.tech"
NEON_URL = f"postgresql://alex:{SECRET}@{POOLED}/neondb?sslmode=require&channel_binding=require"
PRISMA_KEYS = {
    "pgbouncer", "connection_limit", "pool_timeout", "connect_timeout", "schema", "socket_timeout",
    "statement_cache_size", "max_connection_lifetime", "max_idle_connection_lifetime", "sslaccept", "sslidentity",
}


def libpq(endpoint: Endpoint) -> dict[str, str]:
    """What libpq will actually receive for this endpoint."""
    return conninfo_to_dict(endpoint.conninfo())


def resolve_only(url: str, **kwargs) -> Settings:
    return resolve(url, environ={}, **kwargs)


# --- Neon pooled <-> direct -------------------------------------------------


def test_direct_is_derived_from_pooled_neon_url_keeping_the_cell_label():
    s = resolve_only(NEON_URL)
    assert s.pooled.host == POOLED and s.pooled.pooled
    assert s.direct.host == DIRECT and not s.direct.pooled
    assert s.direct.endpoint_id == s.pooled.endpoint_id == "ep-cool-darkness-123456"
    assert libpq(s.direct)["password"] == SECRET
    assert libpq(s.direct)["channel_binding"] == "require"


def test_pooled_is_derived_from_direct_neon_url_on_azure():
    s = resolve_only("postgres://alex:" + SECRET + "@ep-quiet-sun-987654.eastus2.azure.neon.tech/db")
    assert s.direct.host == "ep-quiet-sun-987654.eastus2.azure.neon.tech"
    assert s.pooled.host == "ep-quiet-sun-987654-pooler.eastus2.azure.neon.tech"
    assert s.pooled.pooled and not s.direct.pooled


def test_both_urls_are_used_as_given():
    direct = f"postgresql://migrator:{SECRET}@{DIRECT}/neondb"
    s = resolve_only(NEON_URL, direct_url=direct)
    assert s.pooled.user == "alex" and s.direct.user == "migrator"


def test_direct_url_alone_from_environment_derives_pooled():
    env = {"DIRECT_URL": f"postgresql://alex:{SECRET}@{DIRECT}/neondb"}
    s = resolve(environ=env, dotenv_path=None)
    assert s.pooled.host == POOLED and s.direct.host == DIRECT


@pytest.mark.parametrize(
    ("url", "pooled"),
    [
        ("postgresql://u:pw@db.example.com:6432/app?pgbouncer=true", True),
        ("postgresql://u:pw@db-pooler.example.com/app", True),
        ("postgresql://u:pw@db.example.com/app", True),  # not known to be direct: pooler-safe
        ("postgresql://u:pw@db.example.com/app?pgbouncer=false", False),
    ],
)
def test_non_neon_url_serves_both_roles(url, pooled):
    s = resolve_only(url)
    assert s.pooled == s.direct
    assert s.pooled.pooled is pooled
    assert not s.pooled.is_neon and s.pooled.endpoint_id is None


# --- Prisma parameters ------------------------------------------------------


def test_prisma_parameters_are_mapped_and_never_reach_libpq():
    url = (
        NEON_URL + "&pgbouncer=true&connection_limit=3&pool_timeout=0&connect_timeout=20&schema=analytics"
        "&socket_timeout=5&statement_cache_size=0&sslaccept=strict&sslidentity=id.p12"
        "&max_connection_lifetime=60&max_idle_connection_lifetime=30&application_name=nb"
    )
    s = resolve_only(url)
    assert (s.pool_size, s.pool_timeout, s.connect_timeout, s.schema) == (3, None, 20.0, "analytics")
    for endpoint in (s.pooled, s.direct):
        params = libpq(endpoint)
        assert not PRISMA_KEYS & params.keys()
        assert params["application_name"] == "nb"


def test_defaults_apply_when_nothing_is_given():
    s = resolve_only(NEON_URL)
    assert s.connect_timeout == DEFAULT_CONNECT_TIMEOUT >= 10
    assert s.wake_timeout == DEFAULT_WAKE_TIMEOUT >= 30
    assert (s.pool_size, s.pool_timeout, s.schema, s.statement_timeout) == (
        DEFAULT_POOL_SIZE, DEFAULT_POOL_TIMEOUT, None, None,
    )


def test_keyword_arguments_win_over_url_parameters_and_zero_means_no_limit():
    s = resolve_only(NEON_URL + "&connection_limit=3&pool_timeout=7&schema=a", pool_size=8, pool_timeout=0,
                     schema="b", connect_timeout=0, statement_timeout=30, wake_timeout=90)
    assert (s.pool_size, s.pool_timeout, s.schema, s.connect_timeout) == (8, None, "b", None)
    assert (s.statement_timeout, s.wake_timeout) == (30, 90)


def test_none_means_no_limit_and_unset_means_not_given():
    s = resolve_only(NEON_URL + "&pool_timeout=7&connect_timeout=4", pool_timeout=None,
                     connect_timeout=UNSET, statement_timeout=None, schema=UNSET)
    assert s.pool_timeout is None  # None given: no limit, over the URL's 7
    assert s.connect_timeout == 4.0  # UNSET: the URL's value
    assert s.statement_timeout is None and s.schema is None
    assert resolve_only(NEON_URL, pool_timeout=UNSET).pool_timeout == DEFAULT_POOL_TIMEOUT
    with pytest.raises(ConfigurationError, match="pool_size"):
        resolve_only(NEON_URL, pool_size=None)  # None is "no limit", which a pool size has not


def test_the_options_are_declared_once_by_settings():
    """connect() spells the options out for shift-tab; they must be Settings' fields, in order, UNSET by default."""
    import dataclasses
    import inspect

    from neon_notebook._connect import connect

    fields = {f.name: f for f in dataclasses.fields(Settings)}
    assert OPTIONS == tuple(fields)[2:]
    params = inspect.signature(connect).parameters
    assert tuple(n for n in params if n in fields) == OPTIONS
    for name in OPTIONS:
        assert params[name].kind is inspect.Parameter.KEYWORD_ONLY
        assert params[name].default is UNSET
        assert params[name].annotation == f"{fields[name].type} | Unset"
    assert set(params) - set(OPTIONS) == {"url", "direct_url", "suspend_after", "environ", "dotenv_path",
                                          "transport", "http_url"}
    resolve_params = inspect.signature(resolve).parameters
    assert [n for n in resolve_params if n in fields] == []  # resolve takes them as **options ...
    with pytest.raises(TypeError, match="pool_sise"):  # ... and refuses any other name
        resolve_only(NEON_URL, pool_sise=3)
    given = connect(NEON_URL, environ={}, pool_size=3, pool_timeout=0, suspend_after=None)
    assert (given.settings.pool_size, given.settings.pool_timeout) == (3, None)
    given.close()


def test_database_url_parameters_win_over_direct_url_parameters():
    s = resolve_only(NEON_URL + "&connection_limit=3", direct_url=f"postgresql://a:b@{DIRECT}/neondb?connection_limit=9&schema=s")
    assert s.pool_size == 3 and s.schema == "s"


# --- TLS --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u:pw@db.example.com/app", "require"),
        ("postgresql://u:pw@db.example.com/app?sslmode=verify-full", "verify-full"),
        ("postgresql://u:pw@db.example.com/app?sslmode=disable", "disable"),  # the user's choice
        (f"postgresql://u:pw@{DIRECT}/app?sslmode=prefer", "require"),  # Neon: no downgrade
        (f"postgresql://u:pw@{DIRECT}/app?sslmode=verify-ca", "verify-ca"),
        ("postgresql://u:pw@localhost/app", None),
        ("postgresql://u:pw@127.0.0.1:5433/app", None),
        ("postgresql://u:pw@[::1]/app", None),
        ("postgresql://u@/app?host=/var/run/postgresql", None),
    ],
)
def test_sslmode(url, expected):
    assert libpq(resolve_only(url).direct).get("sslmode") == expected


@pytest.mark.parametrize("mode", ["disable", "allow"])
def test_plaintext_to_neon_is_refused(mode):
    with pytest.raises(ConfigurationError, match="TLS") as info:
        resolve_only(f"postgresql://u:{SECRET}@{POOLED}/db?sslmode={mode}")
    assert SECRET not in str(info.value)


# --- passwords --------------------------------------------------------------


@pytest.mark.parametrize("password", ["p@ss", "a:b/c", "100%", "x#y?z", "with space", "ünïcødé✓", "q'uo\\te", "a&b=c+d"])
def test_percent_encoded_password_round_trips_like_libpq(password):
    url = f"postgresql://u:{quote(password, safe='')}@db.example.com/app"
    assert conninfo_to_dict(url)["password"] == password  # libpq is the oracle
    assert libpq(resolve_only(url).direct)["password"] == password


def test_unencoded_question_mark_hash_and_colon_in_password_read_as_libpq_reads_them():
    url = "postgresql://u:pa?ss#w:rd@db.example.com/app?application_name=x"
    expected = conninfo_to_dict(url)
    params = libpq(resolve_only(url).direct)
    assert params["password"] == expected["password"] == "pa?ss#w:rd"
    assert params["application_name"] == "x"


def shown(s: Settings) -> list[str]:
    return [repr(s), str(s), repr(s.direct), str(s.direct), s.direct.redacted(), summary(s.direct)]


@hsettings(max_examples=150, deadline=None, database=None)
@given(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1))
def test_any_password_round_trips_and_never_shows(password):
    s = resolve_only(f"postgresql://u:{quote(password, safe='')}@db.example.com/app")
    assert libpq(s.direct)["password"] == password
    # Whatever the password, what is displayed is the same as for any other one.
    assert shown(s) == shown(resolve_only("postgresql://u:other@db.example.com/app"))


def test_missing_password_is_left_to_libpq():
    s = resolve_only("postgresql://alex@db.example.com/app")
    assert s.direct.password is None and "password" not in libpq(s.direct)
    assert "password" not in libpq(resolve_only("postgresql://alex:@db.example.com/app").direct)


# --- malformed URLs ---------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "says"),
    [
        (f"mysql://u:{SECRET}@h/db", "postgresql://"),
        (f"host=h password={SECRET}", "key=value"),
        (f"postgresql://u:{SECRET}@h:54x2/db", "port"),
        (f"postgresql://u:{SECRET}@h:70000/db", "port"),
        (f"postgresql://u:{SECRET}@/db", "no host"),
        (f"postgresql://u:{SECRET}@h1,h2/db", "several hosts"),
        (f"postgresql://u:{SECRET[:4]}@{SECRET[4:]}@h/db", "%40"),
        (f"postgresql://u:{SECRET[:4]}/{SECRET[4:]}@h/db", "%2F"),
        (f"postgresql://u:{SECRET}%zz@h/db", "%25"),
        (f"postgresql://u:{SECRET} x@h/db", "%20"),
        (f"postgresql://u:{SECRET}@h/db?connection_limit=abc", "connection_limit"),
        (f"postgresql://u:{SECRET}@h/db?connection_limit=0", "connection_limit"),
        (f"postgresql://u:{SECRET}@h/db?pool_timeout=-1", "pool_timeout"),
        (f"postgresql://u:{SECRET}@h/db?pgbouncer=yes", "pgbouncer"),
        (f"postgresql://u:{SECRET}@h/db?sslmode=strict", "sslmode"),
        (f"postgresql://u:{SECRET}@h/db?no_such_param=1", "no_such_param"),
        (f"postgresql://u:{SECRET}@[::1/db", "libpq"),
        (f"postgresql://u:{SECRET}@h/db?password={SECRET}2&x", "libpq"),
        (f"postgresql://u:{SECRET}", "port"),  # user:password with the host forgotten
    ],
)
def test_malformed_url_fails_with_a_useful_message_and_no_password(url, says):
    with pytest.raises(ConfigurationError) as info:
        resolve_only(url)
    message = str(info.value)
    assert says in message
    assert SECRET not in message and SECRET[4:] not in message
    assert "the url argument" in message


def test_nothing_configured_explains_where_urls_come_from(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigurationError, match="DATABASE_URL.*DIRECT_URL"):
        resolve(environ={})


@pytest.mark.parametrize(
    "kwargs",
    [{"pool_size": 0}, {"pool_size": 2.5}, {"connect_timeout": -1}, {"pool_timeout": "10"}, {"wake_timeout": -5}],
)
def test_bad_keyword_values_fail(kwargs):
    with pytest.raises(ConfigurationError):
        resolve_only(NEON_URL, **kwargs)


# --- .env files, read as Prisma reads them -----------------------------------


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_dotenv_in_working_directory_with_expansion_quotes_and_comments(tmp_path, monkeypatch):
    write(tmp_path / ".env", f"""
# Neon credentials
PGPASS='{SECRET}'
export DATABASE_URL="postgresql://alex:${{PGPASS}}@{POOLED}/neondb?sslmode=require"  # pooled
DIRECT_URL=postgresql://alex:${{PGPASS}}@{DIRECT}/neondb?schema=${{MISSING}}x
""")
    monkeypatch.chdir(tmp_path)
    s = resolve(environ={})
    assert s.pooled.password == s.direct.password == SECRET
    assert s.pooled.host == POOLED and s.direct.host == DIRECT and s.schema == "x"


def test_environment_wins_over_dotenv_and_feeds_expansion(tmp_path, monkeypatch):
    write(tmp_path / ".env", f"DATABASE_URL=postgresql://a:${{PGPASS}}@{POOLED}/file\nPGPASS=fromfile\n")
    monkeypatch.chdir(tmp_path)
    assert resolve(environ={"PGPASS": "fromenv"}).pooled.password == "fromenv"
    env = {"DATABASE_URL": f"postgresql://a:b@{POOLED}/fromenv"}
    assert resolve(environ=env).pooled.database == "fromenv"


def test_escaped_reference_stays_literal(tmp_path, monkeypatch):
    write(tmp_path / ".env", "DATABASE_URL=postgresql://a:\\${NOPE}@db.example.com/app\n")
    monkeypatch.chdir(tmp_path)
    assert resolve(environ={}).direct.password == "${NOPE}"


def test_prisma_dir_env_is_read_before_cwd_env(tmp_path, monkeypatch):
    write(tmp_path / "prisma" / ".env", f"DATABASE_URL=postgresql://a:b@{POOLED}/fromprisma\n")
    write(tmp_path / ".env", f"DIRECT_URL=postgresql://a:b@{DIRECT}/fromcwd\n")
    monkeypatch.chdir(tmp_path)
    s = resolve(environ={})
    # Prisma loads only the first of ./prisma/.env and ./.env: DIRECT_URL is derived, not read.
    assert s.pooled.database == "fromprisma" and s.direct.database == "fromprisma"


def test_project_root_env_is_found_from_a_subdirectory_and_wins(tmp_path, monkeypatch):
    write(tmp_path / "pyproject.toml", "")
    write(tmp_path / ".env", f"DATABASE_URL=postgresql://a:b@{POOLED}/fromroot\n")
    write(tmp_path / "notebooks" / "prisma" / ".env",
          f"DATABASE_URL=postgresql://a:b@{POOLED}/fromsub\nDIRECT_URL=postgresql://a:b@{DIRECT}/direct\n")
    monkeypatch.chdir(tmp_path / "notebooks")
    s = resolve(environ={})
    assert s.pooled.database == "fromroot" and s.direct.database == "direct"


def test_explicit_dotenv_path_is_the_only_file(tmp_path, monkeypatch):
    write(tmp_path / ".env", f"DATABASE_URL=postgresql://a:b@{POOLED}/cwd\n")
    write(tmp_path / "other.env", f"DATABASE_URL=postgresql://a:b@{POOLED}/other\n")
    monkeypatch.chdir(tmp_path)
    assert resolve(environ={}, dotenv_path=tmp_path / "other.env").pooled.database == "other"
    with pytest.raises(ConfigurationError, match="not a file"):
        resolve(environ={}, dotenv_path=tmp_path / "missing.env")


def test_malformed_url_from_dotenv_names_its_source(tmp_path, monkeypatch):
    write(tmp_path / ".env", f"DATABASE_URL=postgresql://a:{SECRET}@{POOLED}:port/db\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigurationError) as info:
        resolve(environ={})
    assert "DATABASE_URL (from" in str(info.value) and SECRET not in str(info.value)


# --- display and redaction ---------------------------------------------------


def test_nothing_shows_the_password():
    s = resolve_only(NEON_URL + "&sslpassword=KeyPass99")
    for text in (repr(s), str(s), repr(s.pooled), str(s.direct), s.pooled.redacted(), summary(s.direct)):
        assert SECRET not in text and "KeyPass99" not in text
    assert s.pooled.redacted().startswith(f"postgresql://alex:****@{POOLED}:5432/neondb?")
    assert summary(s.pooled) == f"alex@{POOLED}:5432/neondb (pooled)"
    assert set(s.pooled.secrets) == {SECRET, "KeyPass99"}


def test_redacted_url_is_a_valid_libpq_url_without_the_secret():
    endpoint = resolve_only("postgresql://a%40b:pw@/my%20db?host=/tmp&options=endpoint%3Dep-x").direct
    parsed = conninfo_to_dict(endpoint.redacted())
    assert parsed == {**libpq(endpoint), "password": "****"}


def test_redact_scrubs_raw_and_encoded_forms():
    password = "p@ss w/rd"
    text = f"failed for {password} in postgresql://u:{quote(password, safe='')}@h and {quote(password)}"
    cleaned = redact(text, password, None, "")
    assert password not in cleaned and quote(password, safe="") not in cleaned and quote(password) not in cleaned
    assert cleaned.count("****") == 3


@pytest.mark.parametrize("text, shown", [
    ("postgresql://alex:pw@x@host/db?sslpassword=k&a=b", "postgresql://alex:****@host/db?sslpassword=****&a=b"),
    ("postgres://alex:secret/db?password=p", "postgres://alex:****/db?password=****"),
    ("postgresql://host:5432/db", "postgresql://host:5432/db"),
    ("host=h password='a b' user=u", "host=h password=**** user=u"),
    ("alex:secret@host/db", "alex:****@host/db"),
])
def test_redact_url_masks_whatever_may_be_a_password(text, shown):
    assert redact_url(text) == shown


def test_connect_timeout_override_is_whole_seconds_for_libpq():
    endpoint = resolve_only(NEON_URL).direct
    assert conninfo_to_dict(endpoint.conninfo(connect_timeout=2.1))["connect_timeout"] == "3"
    assert "connect_timeout" not in libpq(resolve_only(NEON_URL + "&connect_timeout=9").direct)


def test_endpoint_is_immutable_and_hashable():
    endpoint = resolve_only(NEON_URL).pooled
    with pytest.raises(TypeError):
        endpoint.params["sslmode"] = "disable"
    assert hash(endpoint) == hash(resolve_only(NEON_URL).pooled)


# --- libpq's URI parsing, without libpq -------------------------------------------

def _libpq_reads(parse, uri: str) -> tuple[str, object]:
    """What a URI parser makes of ``uri``: its parameters (in order), libpq's complaint, or a bad UTF-8 value."""
    try:
        return "params", list(parse(uri).items())
    except UnicodeDecodeError as exc:
        return "not utf-8", str(exc)
    except (ValueError, psycopg.ProgrammingError) as exc:
        return "refused", str(exc).strip()


_piece = st.lists(st.sampled_from(["a", "B", "é", " ", "%20", "%41", "%C3%A9", "%ff", "%00", "%zz", "%", ":", ",",
                                    "[", "]", "::1", "/", "=", "&", "?", "@", "\t", "5432"]), max_size=5).map("".join)
_keys = st.sampled_from(["sslmode", "host", "port", "user", "dbname", "options", "application_name", "ssl",
                         "requiressl", "service", "connect_timeout", "foo", "", "%73slmode", "ssl%6dode"])
_params = st.lists(st.tuples(_keys, st.sampled_from(["=", "", "=="]), _piece), max_size=4).map(
    lambda ps: "&".join(k + eq + v for k, eq, v in ps))


@hsettings(max_examples=400, deadline=None, database=None)
@given(user=_piece, password=st.none() | _piece, host=_piece, db=st.none() | _piece, query=st.none() | _params,
       at=st.booleans())
def test_libpq_uri_reads_urls_as_libpq_does(user, password, host, db, query, at):
    userinfo = (user + (":" + password if password is not None else "") + "@") if at else ""
    uri = ("postgresql://" + userinfo + host + ("/" + db if db is not None else "")
           + ("?" + query if query is not None else ""))
    assert _libpq_reads(libpq_uri, uri) == _libpq_reads(conninfo_to_dict, uri)


def test_libpq_keywords_are_the_installed_libpqs():
    assert LIBPQ_KEYWORDS == tuple(o.keyword.decode() for o in psycopg.pq.Conninfo.get_defaults())
