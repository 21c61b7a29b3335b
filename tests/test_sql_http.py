"""The local compute's ``POST /sql``: Neon's SQL over HTTP, ported from Neon's test_proxy.py and checked
against psycopg over TCP on the same compute."""

from __future__ import annotations

import http.client
import json
import re
import socket
import threading
import time
from urllib.parse import quote, urlsplit

import psycopg
import pytest

from neon_notebook.local import LocalCompute
from neon_notebook.local.sqljson import _array_param, param_text, ryu, value_to_json

LIMIT = 64 << 10
ERROR_KEYS = ["code", "column", "constraint", "dataType", "detail", "file", "hint", "internalPosition",
              "internalQuery", "line", "message", "position", "routine", "schema", "severity", "table", "where"]
UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


@pytest.fixture(scope="module")
def compute():
    c = LocalCompute(suspend_after=None, start_active=True, http_max_request_bytes=LIMIT,
                     http_max_response_bytes=LIMIT)
    yield c
    c.close()


@pytest.fixture
def pg(compute):
    """psycopg over TCP, the oracle (per test: suspensions close connections)."""
    with psycopg.connect(compute.direct_url, autocommit=True) as conn:
        yield conn


def request(compute, body, headers=None, *, conn_string=None, method="POST", path="/sql", raw=None,
            timeout=30):
    """(status, headers, parsed JSON body or None) of one request on a fresh connection."""
    url = urlsplit(compute.http_url)
    client = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)
    all_headers = {"Neon-Connection-String": conn_string or compute.direct_url, **(headers or {})}
    all_headers = {k: v for k, v in all_headers.items() if v is not None}
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    try:
        client.request(method, path, body=data, headers=all_headers)
        response = client.getresponse()
        text = response.read()
        return response.status, response.headers, (json.loads(text) if text else None)
    finally:
        client.close()


def ok(compute, body, headers=None, **kw):
    status, _, result = request(compute, body, headers, **kw)
    assert status == 200, result
    return result


def q(compute, sql, params=None, raw=False, array=False, **kw):
    headers = {"Neon-Raw-Text-Output": "true" if raw else "false", "Neon-Array-Mode": "true" if array else "false"}
    return ok(compute, {"query": sql, "params": params or []}, headers, **kw)


def error(compute, body, headers=None, status=400, **kw):
    got, hdrs, result = request(compute, body, headers, **kw)
    assert got == status, result
    return result


# -- results --------------------------------------------------------------------------------
def test_output_options(compute):
    sql = "select 1 as n, 'a' as s, '{1,2,3}'::int4[] as arr"
    assert q(compute, sql)["rows"] == [{"arr": [1, 2, 3], "n": 1, "s": "a"}]
    assert q(compute, sql, array=True)["rows"] == [[1, "a", [1, 2, 3]]]
    assert q(compute, sql, raw=True)["rows"] == [{"arr": "{1,2,3}", "n": "1", "s": "a"}]
    assert q(compute, sql, raw=True, array=True)["rows"] == [["1", "a", "{1,2,3}"]]


def test_params_are_text_and_types_inferred(compute):
    assert q(compute, "select 42 as answer")["rows"] == [{"answer": 42}]
    assert q(compute, "select $1 as answer", [42])["rows"] == [{"answer": "42"}]
    assert q(compute, "select $1 * 1 as answer", [42])["rows"] == [{"answer": 42}]
    assert q(compute, "select $1::int[] as answer", [[1, 2, 3]])["rows"] == [{"answer": [1, 2, 3]}]
    assert q(compute, "select $1::json->'a' as answer", [{"a": {"b": 42}}])["rows"] == [{"answer": {"b": 42}}]
    assert q(compute, "select $1::jsonb[] as answer", [[{}]])["rows"] == [{"answer": [{}]}]
    assert q(compute, "select $1::jsonb[] as answer", [[{"foo": 1}, {"bar": 2}]])["rows"] == \
        [{"answer": [{"foo": 1}, {"bar": 2}]}]
    assert len(q(compute, "select * from pg_class limit 1")["rows"]) == 1
    # objects are re-serialised with sorted keys, as serde_json does without preserve_order
    assert q(compute, "select $1::text as t", [{"b": 1, "a": [1.5, None]}])["rows"] == [{"t": '{"a":[1.5,null],"b":1}'}]


def test_json_mode_types_match_neon(compute):
    row = q(compute, "select true b, 7::int2 s, 8::int8 l, 1.5::float4 r, 'NaN'::float8 nan, "
                     "'-Infinity'::float8 ninf, 1e20::float8 big, '[1:2]={a,\"b,c\"}'::text[] arr, "
                     "'{{1,NULL},{3,4}}'::int[] m, 1.50::numeric n, null::int nul, "
                     "'{\"x\": [1, 2]}'::json j")["rows"][0]
    assert row == {"b": True, "s": 7, "l": "8", "r": 1.5, "nan": "NaN", "ninf": "-Infinity", "big": 1e20,
                   "arr": ["a", "b,c"], "m": [[1, None], [3, 4]], "n": "1.50", "nul": None, "j": {"x": [1, 2]}}


def test_fields_match_row_description(compute, pg):
    pg.execute("create table if not exists fields_t (id int primary key, v varchar(10), ts timestamptz)")
    result = q(compute, "select id, v, ts, 1::int8 as x from fields_t")
    cur = pg.execute("select id, v, ts, 1::int8 as x from fields_t")
    table_oid = pg.execute("select 'fields_t'::regclass::oid").fetchone()[0]
    fields = result["fields"]
    assert [list(f) for f in fields] == [["name", "dataTypeID", "tableID", "columnID", "dataTypeSize",
                                          "dataTypeModifier", "format"]] * 4
    assert [f["name"] for f in fields] == [d.name for d in cur.description]
    assert [f["dataTypeID"] for f in fields] == [d.type_code for d in cur.description]
    assert [(f["tableID"], f["columnID"]) for f in fields] == [(table_oid, 1), (table_oid, 2), (table_oid, 3), (0, 0)]
    assert [f["dataTypeSize"] for f in fields] == [4, -1, 8, 8]
    assert fields[1]["dataTypeModifier"] == 14 and fields[0]["dataTypeModifier"] == -1
    assert {f["format"] for f in fields} == {"text"}


def test_command_and_row_count(compute):
    res = q(compute, "create table t(id serial primary key, val int)")
    assert (res["command"], res["rowCount"], res["fields"], res["rows"]) == ("CREATE", None, [], [])
    res = q(compute, "insert into t(val) values (10), (20), (30) returning id")
    assert (res["command"], res["rowCount"], res["rows"]) == ("INSERT", 3, [{"id": 1}, {"id": 2}, {"id": 3}])
    res = q(compute, "select * from t")
    assert (res["command"], res["rowCount"], res["rowAsArray"]) == ("SELECT", 3, False)
    res = q(compute, "update t set val = val + 1 where id < 3")
    assert (res["command"], res["rowCount"]) == ("UPDATE", 2)
    res = q(compute, "drop table t")
    assert (res["command"], res["rowCount"]) == ("DROP", None)


def test_response_key_order_and_empty_query(compute):
    status, _, _ = request(compute, {"query": ""})
    url = urlsplit(compute.http_url)
    client = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    client.request("POST", "/sql", body=json.dumps({"query": ""}),
                   headers={"Neon-Connection-String": compute.direct_url})
    raw = client.getresponse().read()
    client.close()
    assert status == 200
    assert raw == b'{"fields":[],"rows":[],"command":"","rowCount":null,"rowAsArray":false}'


def test_batch_with_header_echo(compute):
    headers = {"Neon-Batch-Isolation-Level": "Serializable", "Neon-Batch-Read-Only": "false",
               "Neon-Batch-Deferrable": "false"}
    queries = [("select 42 as answer", None), ("select $1 as answer", [42]), ("select $1 * 1 as answer", [42]),
               ("select $1::int[] as answer", [[1, 2, 3]]), ("select $1::json->'a' as answer", [{"a": {"b": 42}}]),
               ("create table bt(id serial primary key, val int)", None),
               ("insert into bt(val) values (10), (20), (30) returning id", None),
               ("select current_setting('transaction_isolation') as iso", None), ("drop table bt", None)]
    status, hdrs, body = request(compute, {"queries": [{"query": s, "params": p or []} for s, p in queries]},
                                 headers)
    assert status == 200, body
    assert hdrs["Neon-Batch-Isolation-Level"] == "Serializable"
    assert "Neon-Batch-Read-Only" not in hdrs and "Neon-Batch-Deferrable" not in hdrs
    r = body["results"]
    assert [x["rows"] for x in r[:5]] == [[{"answer": 42}], [{"answer": "42"}], [{"answer": 42}],
                                          [{"answer": [1, 2, 3]}], [{"answer": {"b": 42}}]]
    assert (r[5]["command"], r[5]["rowCount"]) == ("CREATE", None)
    assert (r[6]["command"], r[6]["rowCount"], r[6]["rows"]) == ("INSERT", 3, [{"id": 1}, {"id": 2}, {"id": 3}])
    assert r[7]["rows"] == [{"iso": "serializable"}] and len(r) == 9

    headers = {"Neon-Batch-Isolation-Level": "RepeatableRead", "Neon-Batch-Read-Only": "true",
               "Neon-Batch-Deferrable": "true"}
    status, hdrs, body = request(compute, {"queries": [{"query": "select current_setting('transaction_isolation') i, "
                                                                  "current_setting('transaction_read_only') r, "
                                                                  "current_setting('transaction_deferrable') d"}]},
                                 headers)
    assert status == 200
    assert (hdrs["Neon-Batch-Isolation-Level"], hdrs["Neon-Batch-Read-Only"], hdrs["Neon-Batch-Deferrable"]) == \
        ("RepeatableRead", "true", "true")
    assert body["results"][0]["rows"] == [{"i": "repeatable read", "r": "on", "d": "on"}]
    assert ok(compute, {"queries": []}) == {"results": []}


def test_batch_per_query_array_mode(compute):
    body = ok(compute, {"queries": [{"query": "select $1 as answer", "params": [42], "arrayMode": True},
                                    {"query": "select $1 as answer", "params": [42], "arrayMode": False}]},
              {"Neon-Array-Mode": "true"})
    assert body["results"][0]["rowAsArray"] and body["results"][0]["rows"] == [["42"]]
    assert not body["results"][1]["rowAsArray"] and body["results"][1]["rows"] == [{"answer": "42"}]


def test_batch_is_one_transaction_and_rolls_back_on_error(compute, pg):
    pg.execute("create table if not exists batch_t (id int primary key)")
    result = error(compute, {"queries": [{"query": "insert into batch_t values (1)"},
                                         {"query": "insert into batch_t values (1)"}]})
    assert result["code"] == "23505" and "duplicate key" in result["message"]
    assert pg.execute("select count(*) from batch_t").fetchone()[0] == 0
    r = ok(compute, {"queries": [{"query": "select txid_current() x"}, {"query": "select txid_current() x"}]})
    assert r["results"][0]["rows"] == r["results"][1]["rows"]


def test_set_in_batch_does_not_leak(compute):
    def multi(*queries):
        return [r["rows"] for r in ok(compute, {"queries": [{"query": s} for s in queries]})["results"]]

    assert multi("select '0 seconds'::interval as interval")[0][0]["interval"] == "00:00:00"
    set_then_read = multi("SET IntervalStyle = 'iso_8601'", "select '0 seconds'::interval as interval")
    assert set_then_read[1][0]["interval"] == "PT0S"
    assert multi("select '0 seconds'::interval as interval")[0][0]["interval"] == "00:00:00"


def test_begin_does_not_leak(compute, pg):
    q(compute, "BEGIN;")
    error(compute, {"query": "garbage-lol(&(&(&(&"})
    assert q(compute, "SELECT 1 as x")["rows"] == [{"x": 1}]
    idle_in_tx = "select count(*) from pg_stat_activity where state like 'idle in transaction%'"
    assert pg.execute(idle_in_tx).fetchone()[0] == 0


def test_custom_enum_array_in_json_mode(compute, pg):
    pg.execute("drop type if exists foo_enum; create type foo_enum as enum ('foo','bar','baz')")
    rows = q(compute, "select array['foo'::foo_enum, 'bar', 'baz'] as data")["rows"]
    assert rows == [{"data": ["foo", "bar", "baz"]}]


def test_url_encoded_credentials_and_other_roles(compute, pg):
    pg.execute("""drop role if exists "http+auth$$"; create role "http+auth$$" with login password '%+$^&*@!'""")
    url = f"postgresql://{quote('http+auth$$', safe='')}:{quote('%+$^&*@!', safe='')}@db.localtest.me/postgres"
    assert q(compute, "select current_user as u", conn_string=url)["rows"] == [{"u": "http+auth$$"}]
    bad = f"postgresql://{quote('http+auth$$', safe='')}:nope@db.localtest.me/postgres"
    assert error(compute, {"query": "select 1"}, conn_string=bad)["message"] == \
        "password authentication failed for user 'http+auth$$'"


def test_both_urls_and_hosts_accepted(compute):
    for url in (compute.direct_url, compute.pooled_url,
                compute.direct_url.replace("127.0.0.1", "ep-local-123.localtest.me")):
        assert q(compute, "select current_setting('application_name') as a", conn_string=url + "?application_name=x")[
            "rows"] == [{"a": ""}]  # only user and database reach the compute


# -- errors ------------------------------------------------------------------------------------
def _diag(pg, sql):
    with pytest.raises(psycopg.Error) as info:
        pg.execute(sql)
    d = info.value.diag
    return {"message": d.message_primary, "code": d.sqlstate, "detail": d.message_detail, "hint": d.message_hint,
            "position": d.statement_position, "internalPosition": d.internal_position,
            "internalQuery": d.internal_query, "severity": d.severity, "where": d.context, "table": d.table_name,
            "column": d.column_name, "schema": d.schema_name, "dataType": d.datatype_name,
            "constraint": d.constraint_name, "file": d.source_file, "line": d.source_line,
            "routine": d.source_function}


@pytest.mark.parametrize("sql", [
    "select * from nope where x = 1",
    "insert into err_t values (1)",
    "select err_f()",
])
def test_error_fields_match_psycopg(compute, pg, sql):
    pg.execute("create table if not exists err_t (id int primary key); insert into err_t values (1) "
               "on conflict do nothing")
    pg.execute("create or replace function err_f() returns int language plpgsql as "
               "$$ begin return (select 1/0 from err_t); end $$")
    url = urlsplit(compute.http_url)
    client = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    client.request("POST", "/sql", body=json.dumps({"query": sql}),
                   headers={"Neon-Connection-String": compute.direct_url})
    response = client.getresponse()
    raw = response.read()
    client.close()
    assert response.status == 400
    assert list(json.loads(raw)) == ERROR_KEYS  # serde_json's json!{} sorts keys (no preserve_order in Neon)
    assert json.loads(raw) == _diag(pg, sql)


def test_statement_errors(compute):
    e = error(compute, {"query": "select 1; select 2"})
    assert (e["code"], e["message"]) == ("42601", "cannot insert multiple commands into a prepared statement")
    e = error(compute, {"query": "select $1, $2", "params": [1]})
    assert (e["code"], e["message"]) == ("08P01", 'bind message supplies 1 parameters, but prepared statement "" '
                                                  'requires 2')


def _proxy_error(result, message):
    assert list(result) == ERROR_KEYS
    assert result == {**dict.fromkeys(ERROR_KEYS), "message": message, "code": "", "severity": ""}


@pytest.mark.parametrize("conn_string, headers, message", [
    (None, {"Neon-Connection-String": None}, "invalid header: neon-connection-string"),
    ("just-text", None, "invalid connection string: relative URL without a base"),
    ("mysql://postgres:pw@h/db", None, "incorrect scheme"),
    ("postgresql://:pw@h/postgres", None, "missing username"),
    ("postgresql://postgres:pw@h", None, "missing database name"),
    ("postgresql://postgres@h/postgres", None, "missing authentication credentials: required password"),
    ("postgresql://postgres:pw@h:99999/postgres", None, "invalid connection string: invalid port number"),
])
def test_connection_string_errors(compute, conn_string, headers, message):
    _proxy_error(error(compute, {"query": "select 1"}, headers, conn_string=conn_string), message)


def test_authorization_header_and_flags_and_body_errors(compute):
    _proxy_error(error(compute, {"query": "select 1"}, {"Authorization": "Bearer x.y.z"}),
                 "missing authentication credentials: required password")
    _proxy_error(error(compute, {"query": "select 1"}, {"Neon-Batch-Isolation-Level": "serializable"}),
                 "invalid isolation level")
    _proxy_error(error(compute, None, raw=b"not json"),
                 "could not parse the HTTP request body: expected value at line 1 column 1")
    _proxy_error(error(compute, {"sql": "select 1"}), "could not parse the HTTP request body: "
                                                      "data did not match any variant of untagged enum Payload")
    e = error(compute, {"query": "select 1"},
              conn_string=compute.direct_url.rsplit("/", 1)[0] + "/nodb")
    assert (e["code"], e["message"]) == ("3D000", 'database "nodb" does not exist')


def test_wrong_password_wakes_nothing(compute):
    compute.suspend()
    wakes = compute.wakes
    url = compute.direct_url.replace(compute.direct_url.split(":")[2].split("@")[0], "wrong")
    _proxy_error(error(compute, {"query": "select 1"}, conn_string=url),
                 "password authentication failed for user 'postgres'")
    assert (compute.wakes, compute.state) == (wakes, "suspended")


def test_request_waits_through_a_cold_start(compute):
    compute.suspend()
    wakes = compute.wakes
    assert q(compute, "select 1 as x")["rows"] == [{"x": 1}]
    assert compute.wakes == wakes + 1


def test_failed_wake_is_500(compute):
    compute.suspend()
    compute.fail_next_wakes(1)
    status, hdrs, body = request(compute, {"query": "select 1"})
    assert status == 500 and hdrs["Access-Control-Allow-Origin"] == "*"
    _proxy_error(body, "Couldn't connect to compute node")
    assert q(compute, "select 1 as x")["rows"] == [{"x": 1}]


def test_suspend_mid_query_is_an_error(compute):
    compute.wake()
    timer = threading.Timer(0.3, compute.suspend)
    timer.start()
    e = error(compute, {"query": "select pg_sleep(5)"})
    timer.join()
    assert e["code"] == "57P01" and "terminating connection" in e["message"]
    assert q(compute, "select 1 as x")["rows"] == [{"x": 1}]


def test_client_disconnect_cancels_the_query(compute, pg):
    pg.execute("create table if not exists cancel_t (id int primary key)")
    sql = "WITH temp AS (SELECT pg_sleep($1) as sleep, $2::int as id) INSERT INTO cancel_t (id) SELECT id FROM temp"
    with pytest.raises(TimeoutError):
        request(compute, {"query": sql, "params": [3, 1]}, timeout=0.5)
    deadline = time.monotonic() + 2
    while pg.execute("select count(*) from pg_stat_activity where query like 'WITH temp%'").fetchone()[0]:
        assert time.monotonic() < deadline, "the query still runs after its client left"
        time.sleep(0.02)
    assert pg.execute("select count(*) from cancel_t").fetchone()[0] == 0
    res = q(compute, sql, [0, 1])
    assert (res["command"], res["rowCount"]) == ("INSERT", 1)


def test_batch_cancelled_on_disconnect_commits_nothing(compute, pg):
    pg.execute("create table if not exists cancel_b (id int primary key)")
    body = {"queries": [{"query": "insert into cancel_b values (1)"}, {"query": "select pg_sleep(3)"}]}
    with pytest.raises(TimeoutError):
        request(compute, body, timeout=0.5)
    deadline = time.monotonic() + 2
    while pg.execute("select count(*) from pg_stat_activity where query like '%pg_sleep(3)%' "
                     "and pid <> pg_backend_pid()").fetchone()[0]:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert pg.execute("select count(*) from cancel_b").fetchone()[0] == 0


# -- limits ---------------------------------------------------------------------------------------
def test_response_too_large(compute):
    _proxy_error(error(compute, {"query": "select repeat('x', 1000) from generate_series(1, 1000)"}, status=507),
                 f"response is too large (max is {LIMIT} bytes)")
    assert len(q(compute, "select repeat('x', 1000) from generate_series(1, 60)")["rows"]) == 60


@pytest.mark.parametrize("size", [LIMIT, 4 << 20])
def test_request_too_large(compute, size):
    _proxy_error(error(compute, {"query": "select $1::text", "params": ["x" * size]}, status=413),
                 f"request is too large (max is {LIMIT} bytes)")


# -- HTTP ------------------------------------------------------------------------------------------
def test_cors_preflight(compute):
    url = urlsplit(compute.http_url)
    client = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    client.request("OPTIONS", "/sql")
    response = client.getresponse()
    assert response.status == 200 and response.read() == b""
    headers = {k.lower(): v for k, v in response.getheaders() if k.lower() not in ("date", "content-length")}
    assert UUID4.fullmatch(headers.pop("neon-request-id"))
    assert headers == {
        "allow": "OPTIONS, POST", "access-control-allow-origin": "*",
        "access-control-allow-headers": "Authorization, Neon-Connection-String, Neon-Raw-Text-Output, "
                                        "Neon-Array-Mode, Neon-Pool-Opt-In, Neon-Batch-Read-Only, "
                                        "Neon-Batch-Isolation-Level",
        "access-control-max-age": "86400"}
    client.close()


def test_post_headers(compute):
    for body, status in (({"query": "select 1"}, 200), ({"query": "select nope"}, 400)):
        got, headers, _ = request(compute, body)
        assert got == status
        assert headers["Access-Control-Allow-Origin"] == "*"
        assert headers["Content-Type"] == "application/json"
        assert UUID4.fullmatch(headers["neon-request-id"])


@pytest.mark.parametrize("method, path", [("GET", "/sql"), ("POST", "/other"), ("PUT", "/sql")])
def test_other_routes(compute, method, path):
    status, headers, body = request(compute, {"query": "select 1"}, method=method, path=path)
    assert (status, body) == (400, "query is not supported")
    assert "Access-Control-Allow-Origin" not in headers and UUID4.fullmatch(headers["neon-request-id"])


def test_keep_alive_and_chunked_body(compute):
    url = urlsplit(compute.http_url)
    client = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    headers = {"Neon-Connection-String": compute.direct_url}
    for i in range(3):
        client.request("POST", "/sql", body=json.dumps({"query": f"select {i} as i"}), headers=headers)
        assert json.loads(client.getresponse().read())["rows"] == [{"i": i}]
    client.request("POST", "/sql", body=iter([b'{"query": "select ', b'7 as i"}']), headers=headers,
                   encode_chunked=True)
    assert json.loads(client.getresponse().read())["rows"] == [{"i": 7}]
    client.close()


def test_latency_and_cut_on_http_endpoint(compute):
    try:
        compute.latency(0.1, endpoint="http")
        started = time.monotonic()
        assert q(compute, "select 1 as x")["rows"] == [{"x": 1}]
        assert time.monotonic() - started >= 0.2
        with psycopg.connect(compute.direct_url) as conn:  # the TCP endpoints are not delayed
            started = time.monotonic()
            conn.execute("select 1")
            assert time.monotonic() - started < 0.1
        compute.latency(0, endpoint="http")
        cuts = compute.cuts
        compute.cut_after(20, endpoint="http", times=1)
        with socket.create_connection(("127.0.0.1", urlsplit(compute.http_url).port), timeout=5) as sock:
            body = json.dumps({"query": "select 1"}).encode()
            sock.sendall(b"POST /sql HTTP/1.1\r\nNeon-Connection-String: %s\r\nContent-Length: %d\r\n\r\n%s"
                         % (compute.direct_url.encode(), len(body), body))
            received = b""
            while chunk := sock.recv(4096):
                received += chunk
        assert received == b"HTTP/1.1 200 OK\r\ncon"  # cut after 20 bytes, then EOF
        assert compute.cuts == cuts + 1
        assert q(compute, "select 1 as x")["rows"] == [{"x": 1}]
    finally:
        compute.latency(0, endpoint="http")
        compute.cut_after(None, endpoint="http")


def test_websocket_upgrade_is_dispatched(compute):
    """An upgrade on any path goes to the WebSocket side, never to the /sql router."""
    with socket.create_connection(("127.0.0.1", urlsplit(compute.http_url).port), timeout=5) as sock:
        sock.sendall(b"GET /anything?address=x:5432 HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
                     b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                     b"Sec-WebSocket-Key: SfIZ24xnfLzfH0LIKm+etQ==\r\n\r\n")
        reply = sock.recv(4096)
    assert reply.startswith(b"HTTP/1.1 101 ")


# -- pure conversions (ports of json.rs's unit tests) ---------------------------------------------------
def test_params_to_pg_text():
    assert [param_text(v) for v in (True, False, 42, 'foo"', None)] == ["true", "false", "42", 'foo"', None]
    assert param_text([True, False, None, "NULL", 42, "foo", 'bar"-\\']) == \
        '{true,false,NULL,"NULL",42,"foo","bar\\"-\\\\"}'
    assert param_text([[True, False], [None, 42]]) == "{{true,false},{NULL,42}}"
    assert _array_param([{"foo": 1}, {"bar": 2}]) == '{"{\\"foo\\":1}","{\\"bar\\":2}"}'


def test_ryu_layout():
    cases = {1.0: "1.0", 42.42: "42.42", 1e20: "1e20", 1.5e-7: "1.5e-7", 1.234e-5: "0.00001234",
             1e15: "1000000000000000.0", 1e16: "1e16", 123456789012345680.0: "1.2345678901234568e17",
             -0.0: "-0.0", 0.1: "0.1", 5e-324: "5e-324", 1.7976931348623157e308: "1.7976931348623157e308"}
    assert {x: ryu(x) for x in cases} == cases


def test_array_literals_to_json():
    def parse(text, elem):
        return json.loads(value_to_json(text, 1, {1: elem}))

    assert parse(r'{"aa\"\\\,a",cha,"bbbb"}', 25) == ['aa"\\,a', "cha", "bbbb"]
    assert parse(r'{{{{"foo",NULL,"bop",bup}}}}', 25) == [[[["foo", None, "bop", "bup"]]]]
    assert parse("{{t,NULL},{NULL,f}}", 16) == [[True, None], [None, False]]
    assert parse("{1,2,3}", 20) == ["1", "2", "3"]
    assert parse("{NaN,Infinity,-Infinity}", 701) == ["NaN", "Infinity", "-Infinity"]
    assert parse("[1:1][-2:-1][3:5]={{{1,2,3},{4,5,6}}}", 21) == [[[1, 2, 3], [4, 5, 6]]]
    assert parse(r'{"{\"foo\": 1}", "{\"bar\": 2}"}', 3802) == [{"foo": 1}, {"bar": 2}]
