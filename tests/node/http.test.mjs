// Neon's driver over the local compute's HTTP endpoint (`neon()` → POST /sql), compared field by field with
// node-postgres over TCP on the same compute, as the driver's own tests/cli/http.test.ts does against Neon.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { neon, NeonDbError, SqlTemplate } from "@neondatabase/serverless";
import { sampleQueries } from "./sampleQueries.mjs";
import {
  DIRECT_URL, POOLED_URL, assertErrorMatchesPg, pastedUrls, assertHttpResultMatchesPg, pointDriverAtCompute, rejection,
  tcpClient, within, withPassword, withUser,
} from "./support.mjs";

pointDriverAtCompute();
let tcp;
before(async () => {
  tcp = await tcpClient();
  await tcp.query(`
    DROP TABLE IF EXISTS node_http_rows, node_http_err, node_http_tx, node_http_cancel;
    DROP DOMAIN IF EXISTS node_posint;
    CREATE DOMAIN node_posint AS int CHECK (VALUE > 0);
    CREATE TABLE node_http_rows (id int PRIMARY KEY, name varchar(20) NOT NULL, price numeric(10,2),
      at timestamptz(3), tags text[], doc jsonb, raw bytea, flag boolean, u uuid, span interval);
    CREATE TABLE node_http_err (id int PRIMARY KEY, name text NOT NULL, n int CHECK (n < 10),
      parent int REFERENCES node_http_err (id));
    CREATE TABLE node_http_tx (n int);
    CREATE TABLE node_http_cancel (n int);`);
});
after(() => tcp.end());

function parameterized(lazyQuery) {
  const data = lazyQuery.queryData;
  return data instanceof SqlTemplate ? data.toParameterizedQuery() : data;
}

// Beyond the driver's list: more parameter types and values whose text forms are easy to get wrong.
const extraQueries = (sql) => [
  sql`SELECT ${"a'b\"c\\d\n€😀"} AS tricky_text`,
  sql`SELECT ${["a\"b", null, "", "x,y", "{}"]}::text[] AS tricky_arr`,
  sql`SELECT ${[[1, null], [null, 4]]}::int[] AS null_nested`,
  sql`SELECT ${[true, false, null]}::bool[] AS arrbool`,
  sql`SELECT ${"NaN"}::float8 AS nan, ${"Infinity"}::float8 AS inf, ${"-Infinity"}::float4 AS ninf, ${-0}::float8 AS nzero`,
  sql`SELECT ${"123456789012345678901234567890.123456789"}::numeric AS bignum`,
  sql`SELECT ${"9223372036854775807"}::int8 AS maxint8, ${-32768}::int2 AS minint2`,
  sql`SELECT ${"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"}::uuid AS uuid`,
  sql`SELECT ${"1 year 2 mons 3 days 04:05:06.789"}::interval AS interval`,
  sql`SELECT ${"infinity"}::timestamptz AS tsinf, ${"-infinity"}::date AS dateinf`,
  sql`SELECT ${new Date(Date.UTC(1969, 11, 31, 23, 59, 59, 999))}::timestamptz AS before_epoch`,
  sql`SELECT ${{ b: [1, { c: null }], a: "ü" }}::jsonb AS jsonb_nested, ${[{ x: 1 }, { y: [2] }]}::jsonb[] AS arrjsonb`,
  sql`SELECT ${"[1,2,3]"}::json AS json_array, ${"null"}::jsonb AS json_null, ${'"s"'}::jsonb AS json_string`,
  sql`SELECT ${Buffer.from([])}::bytea AS empty_bytea, ${""} AS empty_text`,
  sql`SELECT ${"1.5"}::money AS money, ${"abc"}::bpchar(5) AS bpchar, ${"abcdef"}::varchar(3) AS varchar3`,
  sql`SELECT ${"fat & rat"}::tsquery AS tsquery, ${"192.168.1.1"}::inet AS inet, ${"101"}::bit(3) AS bits`,
  sql`SELECT ${"2024-02-29"}::date + ${3}::int AS date_plus`,
  sql`SELECT g AS n, g::text AS s FROM generate_series(1, ${50}::int) AS g`,
  sql`SELECT * FROM generate_series(1, 0) AS empty_result`,
  sql.query("SELECT $1::int + $2::int AS sum, $3::text AS t, $4 AS n", [40, 2, "x", null]),
  sql.query("SELECT $1::date AS d, $2::timestamptz AS ts, $3::bool AS b", [new Date(Date.UTC(2024, 0, 2)), new Date(0), false]),
  sql.query("SELECT $1::bytea AS b", [Buffer.from("\x00\x01binary\xff", "latin1")]),
  sql.query("SELECT $1::int[] AS a, $2::jsonb AS j", [[1, 2, 3], { k: [1, "2"] }]),
];

describe("results match pg over TCP", () => {
  for (const [name, makeQueries] of [["the driver's sampleQueries", sampleQueries], ["more types", extraQueries]]) {
    for (const [urlName, url, arrayMode] of [["direct", DIRECT_URL, false], ["pooled", POOLED_URL, true]]) {
      test(`${name}, ${urlName} URL, arrayMode ${arrayMode}`, async () => {
        const sql = neon(url, { fullResults: true, arrayMode });
        for (const lazy of makeQueries(sql)) {
          const { query, params } = parameterized(lazy);
          const [httpResult, pgResult] = await Promise.all([
            lazy, tcp.query({ text: query, values: params, rowMode: arrayMode ? "array" : undefined }),
          ]);
          assertHttpResultMatchesPg(httpResult, pgResult, query);
        }
      });
    }
  }

  test("the driver's sampleQueries under another time zone (Dates go out as local time with offset)", async () => {
    const zone = process.env.TZ;
    process.env.TZ = "America/New_York"; // Node re-reads TZ: Dates now serialise as -05:00/-04:00
    try {
      const sql = neon(DIRECT_URL, { fullResults: true });
      const queries = [...sampleQueries(sql), sql`SELECT ${new Date(Date.UTC(2024, 6, 1, 3, 4, 5, 6))}::timestamp AS summer`];
      for (const lazy of queries) {
        const { query, params } = parameterized(lazy);
        const [httpResult, pgResult] = await Promise.all([lazy, tcp.query(query, params)]);
        assertHttpResultMatchesPg(httpResult, pgResult, query);
      }
    } finally {
      process.env.TZ = zone;
    }
  });

  test("concurrent requests run side by side; a large request body", async () => {
    const sql = neon(DIRECT_URL);
    const started = Date.now();
    const results = await Promise.all(Array.from({ length: 12 }, (_, i) => sql`SELECT ${i}::int AS i, pg_sleep(0.2)::text AS z`));
    assert.deepStrictEqual(results.map(([r]) => r.i), Array.from({ length: 12 }, (_, i) => i));
    assert.ok(Date.now() - started < 12 * 200, `12 × 0.2 s sleeps took ${Date.now() - started} ms: requests were serialised`);
    const big = "ж".repeat(300_000);
    assert.deepStrictEqual(await sql`SELECT length(${big}) AS n, md5(${big}) = md5(${big}::text) AS same`, [{ n: 300_000, same: true }]);
  });

  test("rows from a table: field metadata (tableID, columnID, typmod) and write commands", async () => {
    const sql = neon(DIRECT_URL, { fullResults: true });
    const steps = [
      ["INSERT INTO node_http_rows (id, name, price, at, tags, doc, raw, flag, u, span) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING *",
        [1, "first", "12.5", new Date(Date.UTC(2024, 5, 1, 12)), ["a", "b"], { k: 1 }, Buffer.from("xyz"), true,
          "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "1 day"]],
      ["INSERT INTO node_http_rows (id, name) SELECT g, 'n' || g FROM generate_series(2, 4) AS g", []],
      ["SELECT * FROM node_http_rows ORDER BY id", []],
      ["SELECT id, name AS renamed, price * 2 AS doubled, r.* FROM node_http_rows AS r WHERE id > $1 ORDER BY id", [1]],
      ["UPDATE node_http_rows SET price = price + 1 WHERE price IS NOT NULL", []],
      ["DELETE FROM node_http_rows WHERE name LIKE 'n%' RETURNING id, name", []],
      ["CREATE TEMP TABLE node_http_tmp (n int)", []],
      ["SELECT 1 AS a, 2 AS a", []],
    ];
    for (const [query, params] of steps) {
      // the TCP twin runs first and is rolled back, so both see the same rows; then HTTP runs it for real
      await tcp.query("BEGIN");
      const pgResult = await tcp.query(query, params);
      await tcp.query("ROLLBACK");
      const httpResult = await sql.query(query, params);
      // Neon's HTTP answer has no OID (pg says 0 for INSERT): the driver's tests compare it as null
      assertHttpResultMatchesPg(httpResult, { ...pgResult, oid: null }, query);
    }
    const first = await tcp.query("SELECT price FROM node_http_rows WHERE id = 1");
    assert.equal(first.rows[0].price, "13.50", "the UPDATE over HTTP committed");
  });

  test("an empty query: command '' and no rows, as Neon answers", async () => {
    const result = await neon(DIRECT_URL, { fullResults: true }).query("", []);
    assert.deepStrictEqual([result.command, result.rowCount, result.fields, result.rows], ["", null, [], []]);
  });
});

test("connection strings as users paste them; a missing database", async () => {
  const probe = "SELECT current_user AS who, current_database() AS db, current_setting('application_name') AS app";
  for (const [name, url] of Object.entries(pastedUrls())) {
    // Neon's proxy passes only user and database to the compute over HTTP: application_name stays empty
    assert.deepStrictEqual(await neon(url).query(probe), [{ who: "postgres", db: "postgres", app: "" }], name);
  }
  const err = await rejection(neon(DIRECT_URL.replace(/\/postgres$/, "/nope"))`SELECT 1`);
  assert.ok(err instanceof NeonDbError);
  assert.deepStrictEqual([err.code, err.message], ["3D000", 'database "nope" does not exist']);
});

describe("options", () => {
  // ported from the driver's tests/cli/http.test.ts 'options to `neon()` and options on queries'
  test("arrayMode × fullResults, on neon() and per query", async () => {
    const ff = await neon(DIRECT_URL, { arrayMode: false, fullResults: false })`SELECT 'xyz' AS str`;
    assert.deepStrictEqual(ff, [{ str: "xyz" }]);
    const ft = await neon(DIRECT_URL, { arrayMode: false, fullResults: true })`SELECT 'xyz' AS str`;
    assert.deepStrictEqual(ft.rows, [{ str: "xyz" }]);
    assert.equal(ft.fields[0].name, "str");
    assert.equal(ft.fields[0].dataTypeID, 25);
    assert.equal(ft.command, "SELECT");
    assert.equal(ft.rowCount, 1);
    assert.equal(ft.rowAsArray, false);
    assert.equal(ft.viaNeonFetch, true);
    const tf = await neon(DIRECT_URL, { arrayMode: true, fullResults: false })`SELECT 'xyz' AS str`;
    assert.deepStrictEqual(tf, [["xyz"]]);
    const tt = await neon(DIRECT_URL, { arrayMode: true, fullResults: true })`SELECT 'xyz' AS str`;
    assert.deepStrictEqual(tt.rows, [["xyz"]]);
    assert.equal(tt.rowAsArray, true);
    const sqlff = neon(DIRECT_URL);
    const fftt = await sqlff.query("SELECT 'xyz' AS str", [], { arrayMode: true, fullResults: true });
    assert.deepStrictEqual(fftt.rows, [["xyz"]]);
    assert.equal(fftt.rowAsArray, true);
    const ttff = await neon(DIRECT_URL, { arrayMode: true, fullResults: true })
      .query("SELECT 'xyz' AS str", [], { arrayMode: false, fullResults: false });
    assert.deepStrictEqual(ttff, [{ str: "xyz" }]);
  });

  test("uncast binary data through sql.query() arrives as its hex text (as on Neon)", async () => {
    const sql = neon(DIRECT_URL);
    assert.deepStrictEqual(await sql.query("SELECT $1 AS bytea", [new Uint8Array([65, 66, 67])]), [{ bytea: "\\x414243" }]);
  });

  test("composable SQL and unsafe raw SQL (the driver's own expectations)", async () => {
    const sql = neon(DIRECT_URL);
    const q = sql`
      SELECT ${sql.query("0 AS n")}, ${123} AS z, ${sql.unsafe('"generate_series"')}
        ${sql`FROM generate_series(${1}::int, ${sql`4`})`}
      UNION SELECT ${sql.query("1 AS n", [])}, ${789} AS z, ${sql.unsafe("x")}
        ${sql`FROM generate_series(${sql`${1}::int`}, ${3}::int) AS x`}
      ${sql`ORDER BY generate_series, z LIMIT ${3}`}`;
    assert.deepStrictEqual(await q, [
      { generate_series: 1, z: "123", n: 0 }, { generate_series: 1, z: "789", n: 1 }, { generate_series: 2, z: "123", n: 0 },
    ]);
  });
});

describe("transactions", () => {
  const sql = neon(DIRECT_URL);
  const settings = "SELECT current_setting('transaction_isolation') AS iso, "
    + "current_setting('transaction_read_only') AS ro, current_setting('transaction_deferrable') AS def";

  test("batches: arrays, functions, mixed, empty (the driver's httpTransaction tests)", async () => {
    const [[a], [b]] = await sql.transaction([sql`SELECT ${1}::int AS "batchInt"`, sql`SELECT ${"hello"} AS "batchStr"`]);
    assert.equal(a.batchInt, 1);
    assert.equal(b.batchStr, "hello");
    const [[c], [d]] = await sql.transaction((txn) => [txn`SELECT ${2}::int AS "batchInt"`, txn.query('SELECT $1 AS "batchStr"', ["bye"])]);
    assert.equal(c.batchInt, 2);
    assert.equal(d.batchStr, "bye");
    assert.deepStrictEqual(await sql.transaction([]), []);
    assert.deepStrictEqual(await sql.transaction(() => []), []);
    const [arr, full] = await sql.transaction([sql`SELECT 1 AS one`, sql.query("SELECT 2 AS two", [], { fullResults: true })], { arrayMode: true });
    assert.deepStrictEqual(arr, [[1]]);
    assert.deepStrictEqual(full.rows, [[2]]);
    assert.equal(full.viaNeonFetch, true);
  });

  const levels = [
    ["ReadUncommitted", "READ UNCOMMITTED"], ["ReadCommitted", "READ COMMITTED"],
    ["RepeatableRead", "REPEATABLE READ"], ["Serializable", "SERIALIZABLE"],
  ];
  test("isolationLevel × readOnly × deferrable take effect as pg's BEGIN does", async () => {
    const cases = [[undefined, undefined, undefined]];
    for (const [level] of levels) for (const ro of [true, false]) cases.push([level, ro, ro ? true : undefined]);
    cases.push([undefined, true, undefined], [undefined, undefined, true]);
    for (const [isolationLevel, readOnly, deferrable] of cases) {
      const opts = Object.fromEntries(Object.entries({ isolationLevel, readOnly, deferrable }).filter(([, v]) => v !== undefined));
      const [[http]] = await sql.transaction([sql.query(settings)], opts);
      const mode = [
        isolationLevel && `ISOLATION LEVEL ${levels.find(([l]) => l === isolationLevel)[1]}`,
        readOnly === true && "READ ONLY", readOnly === false && "READ WRITE", deferrable === true && "DEFERRABLE",
      ].filter(Boolean).join(", ");
      await tcp.query(`BEGIN ${mode}`);
      const { rows: [pgRow] } = await tcp.query(settings);
      await tcp.query("ROLLBACK");
      assert.deepStrictEqual(http, pgRow, JSON.stringify(opts));
    }
    const [[onNeon]] = await neon(DIRECT_URL, { isolationLevel: "RepeatableRead", readOnly: true }).transaction([sql.query(settings)]);
    assert.deepStrictEqual(onNeon, { iso: "repeatable read", ro: "on", def: "off" }, "options given to neon()");
  });

  test("a read-only batch cannot write", async () => {
    const err = await rejection(sql.transaction([sql`INSERT INTO node_http_tx VALUES (99)`], { readOnly: true }));
    assert.ok(err instanceof NeonDbError);
    assert.equal(err.code, "25006");
  });

  test("a failing batch rolls back as a whole; a good one commits", async () => {
    await tcp.query("TRUNCATE node_http_tx");
    const err = await rejection(sql.transaction([
      sql`INSERT INTO node_http_tx VALUES (1)`, sql`INSERT INTO node_http_tx VALUES (2)`, sql`SELECT 1 / ${0}::int`,
    ]));
    assert.ok(err instanceof NeonDbError);
    assert.equal(err.code, "22012");
    assert.equal(err.message, "division by zero");
    assert.equal((await tcp.query("SELECT count(*)::int AS n FROM node_http_tx")).rows[0].n, 0);
    const [ins, [count]] = await sql.transaction([
      sql.query("INSERT INTO node_http_tx VALUES (1), (2) RETURNING n", [], { fullResults: true }),
      sql`SELECT count(*)::int AS n FROM node_http_tx`,
    ]);
    assert.equal(ins.command, "INSERT");
    assert.equal(ins.rowCount, 2);
    assert.equal(count.n, 2, "the batch sees its own writes");
    assert.equal((await tcp.query("SELECT count(*)::int AS n FROM node_http_tx")).rows[0].n, 2);
  });

  test("each request starts from a clean session (SET and BEGIN do not leak)", async () => {
    await sql.transaction([sql`SET statement_timeout = '1234ms'`, sql`SELECT 1`]);
    await sql.query("SET search_path = nowhere");
    await sql.query("BEGIN");
    const [row] = await sql.query("SELECT current_setting('statement_timeout') AS st, current_setting('search_path') AS sp");
    const { rows: [pgRow] } = await tcp.query("SELECT current_setting('statement_timeout') AS st, current_setting('search_path') AS sp");
    assert.deepStrictEqual(row, pgRow);
    // VACUUM refuses to run inside a transaction block (25001): a leaked BEGIN would make it fail
    assert.deepStrictEqual(await sql.query("VACUUM node_http_tx"), []);
  });
});

describe("errors", () => {
  const sql = neon(DIRECT_URL);
  before(async () => {
    await tcp.query("TRUNCATE node_http_err; INSERT INTO node_http_err (id, name) VALUES (1, 'one')");
  });

  // each error once over HTTP and once through pg; pg prepares a named statement, so it takes the extended
  // protocol (Parse/Bind/Execute) that /sql uses for every query, with or without parameters
  const failing = [
    ["SELECT 123 WHERE x", []],
    ["SELEC 1", []],
    ["SELECT 1 / $1::int", [0]],
    ["SELECT $1::int AS n", ["abc"]],
    ["SELECT * FROM nope_missing_table WHERE id = $1", [1]],
    ["INSERT INTO node_http_err (id, name) VALUES ($1, $2)", [1, "dup"]],
    ["INSERT INTO node_http_err (id) VALUES ($1)", [2]],
    ["INSERT INTO node_http_err (id, name, n) VALUES ($1, 'x', 11)", [3]],
    ["INSERT INTO node_http_err (id, name, parent) VALUES ($1, 'x', 42)", [4]],
    ["SELECT $1::node_posint", [-1]],
    ["INSERT INTO node_http_rows (id, name) VALUES ($1, repeat('é', 30))", [99]],
    ["DO $$BEGIN RAISE EXCEPTION 'boom %', 1 USING DETAIL = 'the detail', HINT = 'a hint', ERRCODE = 'P0001'; END$$", []],
    ["DO $$BEGIN EXECUTE 'SELECT nope_col FROM node_http_err'; END$$", []],
    ["SELECT 1; SELECT 2", []],
  ];
  test("NeonDbError equals pg's DatabaseError field by field (the driver's normalisation)", async () => {
    for (const [i, [query, params]] of failing.entries()) {
      const [httpErr, pgErr] = await Promise.all([
        rejection(sql.query(query, params)), rejection(tcp.query({ name: `node_err_${i}`, text: query, values: params })),
      ]);
      assert.ok(httpErr instanceof NeonDbError, query);
      assertErrorMatchesPg(httpErr, pgErr, query);
    }
  });

  test("too few or too many parameters: Postgres's bind message", async () => {
    const few = await rejection(sql.query("SELECT $1", []));
    assert.match(few.message, /^bind message supplies 0 parameters, but prepared statement "" requires 1$/);
    assert.equal(few.code, "08P01");
    const many = await rejection(sql.query("SELECT $1", [1, 2]));
    assert.match(many.message, /^bind message supplies 2 parameters, but prepared statement "" requires 1$/);
  });

  test("a wrong password or user: 'password authentication failed', nothing else leaks", async () => {
    for (const url of [withPassword(DIRECT_URL, "wrong-password"), withUser(DIRECT_URL, "nobody"), withPassword(POOLED_URL, "x")]) {
      const err = await rejection(neon(url)`SELECT ${1}::int AS one`);
      assert.ok(err instanceof NeonDbError);
      // Neon's proxy checks the password itself: its own message, no SQLSTATE (code "", severity "")
      assert.equal(err.message, `password authentication failed for user '${decodeURIComponent(new URL(url).username)}'`);
      assert.deepStrictEqual([err.code, err.severity], ["", ""]);
      assert.ok(!err.message.includes("wrong-password"));
    }
  });

  test("an aborted request is cancelled on the server (AbortSignal.timeout)", async () => {
    await tcp.query("TRUNCATE node_http_cancel");
    const signal = AbortSignal.timeout(300);
    const started = Date.now();
    const err = await rejection(sql.query("INSERT INTO node_http_cancel SELECT 1 FROM pg_sleep(5)", [], { fetchOptions: { signal } }));
    assert.match(String(err.message), /aborted/);
    assert.ok(Date.now() - started < 2000, "the driver gave up at the signal");
    // the server notices the client is gone and cancels the query: it disappears well before its 5 s
    await within(3000, (async () => {
      for (;;) {
        const { rows } = await tcp.query("SELECT count(*)::int AS n FROM pg_stat_activity WHERE query LIKE 'INSERT INTO node_http_cancel%'");
        if (rows[0].n === 0) return;
        await new Promise((r) => setTimeout(r, 50));
      }
    })(), "the cancel of the aborted query");
    assert.equal((await tcp.query("SELECT count(*)::int AS n FROM node_http_cancel")).rows[0].n, 0, "nothing committed");
  });

  test("a signal that does not fire leaves the query alone", async () => {
    const signal = AbortSignal.timeout(3000);
    assert.deepStrictEqual(await sql.query("SELECT pg_sleep(0.05)", [], { fetchOptions: { signal } }), [{ pg_sleep: "" }]);
  });
});
