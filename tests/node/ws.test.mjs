// Neon's driver over the local compute's WebSocket endpoint (`Pool`/`Client` → /v2?address=host:port),
// compared with node-postgres over TCP, as the driver's own tests/cli/ws.test.ts does against Neon.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Client, neon, neonConfig, Pool, SqlTemplate } from "@neondatabase/serverless";
import { sampleQueries } from "./sampleQueries.mjs";
import { DIRECT_URL, POOLED_URL, pastedUrls, plain, pointDriverAtCompute, rejection, tcpClient, within, withPassword } from "./support.mjs";

pointDriverAtCompute();
let tcp;
before(async () => {
  tcp = await tcpClient();
  await tcp.query("DROP TABLE IF EXISTS node_ws_tx; CREATE TABLE node_ws_tx (n int)");
});
after(() => tcp.end());

const count = async () => (await tcp.query("SELECT count(*)::int AS n FROM node_ws_tx")).rows[0].n;

/** A Client's end() must resolve: the server closes the WebSocket after Terminate. */
const end = (client) => within(3000, client.end(), "client.end()");

for (const [urlName, url] of [["direct", DIRECT_URL], ["pooled", POOLED_URL]]) {
  describe(`${urlName} URL`, () => {
    const pool = new Pool({ connectionString: url });
    after(() => within(3000, pool.end(), "pool.end()"));

    test("the driver's sampleQueries match pg over TCP (pool.connect())", async () => {
      const client = await pool.connect();
      try {
        const sql = neon("postgresql://dummy:dummy@dummy.dummy/dummy"); // only builds the queries
        for (const lazy of sampleQueries(sql)) {
          const data = lazy.queryData;
          const { query, params } = data instanceof SqlTemplate ? data.toParameterizedQuery() : data;
          for (const rowMode of [undefined, "array"]) {
            const [wsResult, pgResult] = await Promise.all([
              client.query({ text: query, values: params, rowMode }), tcp.query({ text: query, values: params, rowMode }),
            ]);
            assert.deepStrictEqual(plain(wsResult), plain(pgResult), query);
          }
        }
      } finally {
        client.release();
      }
    });

    test("pool.query() over WebSocket", async () => {
      const result = await pool.query("SELECT $1::int AS one", [1]);
      assert.deepStrictEqual(result.rows, [{ one: 1 }]);
      assert.equal(result.viaNeonFetch, undefined);
      // named prepared statements, reused (through PgBouncer too, as Neon's pooler supports them)
      const client = await pool.connect();
      try {
        for (const n of [1, 2, 3]) {
          assert.deepStrictEqual((await client.query({ name: "node_ws_named", text: "SELECT $1::int AS n", values: [n] })).rows, [{ n }]);
        }
      } finally {
        client.release();
      }
    });

    test("Client and Pool × pipelineConnect {password, false} × coalesceWrites {true, false}", async () => {
      const { pipelineConnect, coalesceWrites } = neonConfig;
      try {
        for (const pc of ["password", false]) {
          for (const cw of [true, false]) {
            neonConfig.pipelineConnect = pc;
            neonConfig.coalesceWrites = cw;
            const label = `pipelineConnect=${pc} coalesceWrites=${cw}`;
            const client = new Client(url);
            await within(5000, client.connect(), `connect, ${label}`);
            const result = await client.query("SELECT $1::int AS one, current_user AS who", [1]);
            const simple = await client.query("SELECT 'two' AS two");
            await end(client);
            assert.deepStrictEqual(result.rows, [{ one: 1, who: "postgres" }], label);
            assert.deepStrictEqual(simple.rows, [{ two: "two" }], label);
            const fresh = new Pool({ connectionString: url, max: 1 });
            assert.deepStrictEqual((await fresh.query("SELECT $1::text AS s", [label])).rows, [{ s: label }], label);
            await within(3000, fresh.end(), `pool.end(), ${label}`);
          }
        }
      } finally {
        Object.assign(neonConfig, { pipelineConnect, coalesceWrites });
      }
    });

    test("interactive transactions: ROLLBACK leaves nothing, COMMIT keeps", async () => {
      await tcp.query("TRUNCATE node_ws_tx");
      const client = new Client(url);
      await client.connect();
      try {
        await client.query("BEGIN");
        await client.query("INSERT INTO node_ws_tx VALUES ($1), ($2)", [1, 2]);
        assert.equal((await client.query("SELECT count(*)::int AS n FROM node_ws_tx")).rows[0].n, 2, "visible inside");
        assert.equal(await count(), 0, "invisible outside before COMMIT");
        await client.query("ROLLBACK");
        assert.equal(await count(), 0);
        await client.query("BEGIN");
        await client.query("INSERT INTO node_ws_tx VALUES (3)");
        await client.query("COMMIT");
        assert.equal(await count(), 1);
        const err = await rejection(client.query("SELECT 1 / 0"));
        assert.equal(err.code, "22012");
        assert.equal((await client.query("SELECT 'still usable' AS s")).rows[0].s, "still usable");
      } finally {
        await end(client);
      }
    });

    test("pool.query() with poolQueryViaFetch goes over HTTP (the driver drops the port)", async () => {
      neonConfig.poolQueryViaFetch = true;
      try {
        const result = await pool.query("SELECT $1::int AS one", [1]);
        assert.deepStrictEqual(result.rows, [{ one: 1 }]);
        assert.equal(result.viaNeonFetch, true);
        const arrays = await pool.query({ text: "SELECT $1::int AS one", values: [2], rowMode: "array" });
        assert.deepStrictEqual(arrays.rows, [[2]]);
      } finally {
        neonConfig.poolQueryViaFetch = false;
      }
    });

    test("a wrong password fails with 'password authentication failed' (both connect modes)", async () => {
      for (const pc of ["password", false]) {
        neonConfig.pipelineConnect = pc;
        try {
          // pipelined, the driver resolves connect() at once (it has sent the password unasked) and the server's
          // refusal arrives later, as an 'error' event or the first query's failure; unpipelined, connect() fails
          const client = new Client(withPassword(url, "wrong-password"));
          const seen = [];
          client.on("error", (e) => seen.push(e));
          try {
            await client.connect();
            await client.query("SELECT 1");
          } catch (e) {
            seen.push(e);
          }
          const refused = (e) => e.message === "password authentication failed for user 'postgres'";
          await within(3000, (async () => {
            while (!seen.some(refused)) await new Promise((r) => setTimeout(r, 20));
          })(), `the refusal, pipelineConnect=${pc}`);
          assert.ok(!seen.some((e) => e.message.includes("wrong-password")));
          assert.equal(seen.find(refused).code, "XX000"); // Neon's proxy refuses with its own error, not Postgres's 28P01
        } finally {
          neonConfig.pipelineConnect = "password";
        }
      }
    });
  });
}

test("notices, notifications, statement_timeout, large messages both ways over WebSocket", async () => {
  const client = new Client(DIRECT_URL);
  await client.connect();
  try {
    const notices = [];
    client.on("notice", (n) => notices.push(n));
    await client.query("DO $$BEGIN RAISE NOTICE 'hello %', 42; END$$");
    assert.equal(notices.length, 1);
    assert.equal(notices[0].message, "hello 42");
    assert.equal(notices[0].severity, "NOTICE");

    const notified = new Promise((resolve) => client.on("notification", resolve));
    await client.query("LISTEN node_ws_channel");
    await tcp.query("NOTIFY node_ws_channel, 'payload'");
    const msg = await within(3000, notified, "the notification");
    assert.deepStrictEqual([msg.channel, msg.payload], ["node_ws_channel", "payload"]);

    await client.query("SET statement_timeout = '100ms'");
    const err = await rejection(client.query("SELECT pg_sleep(2)"));
    assert.equal(err.code, "57014");
    await client.query("RESET statement_timeout");

    const big = "ж".repeat(300_000); // a client frame far beyond 64 KiB, and a result of the same size back
    const { rows: [row] } = await client.query("SELECT length($1::text) AS n, $1::text AS echo", [big]);
    assert.equal(row.n, 300_000);
    assert.equal(row.echo, big);
  } finally {
    await end(client);
  }
});

test("connection strings as users paste them, both connect modes; a missing database", async () => {
  const probe = "SELECT current_user AS who, current_database() AS db, current_setting('application_name') AS app";
  try {
    for (const pc of ["password", false]) {
      neonConfig.pipelineConnect = pc;
      for (const [name, url] of Object.entries(pastedUrls())) {
        const client = new Client(url);
        await within(5000, client.connect(), `connect, ${name}`);
        const { rows } = await client.query(probe);
        await end(client);
        // over WebSocket Neon's proxy forwards application_name (the driver sets its own unless given)
        const app = name === "application_name=mine" ? "mine" : "pkg:npm/%40neondatabase/serverless@1.2.0";
        assert.deepStrictEqual(rows, [{ who: "postgres", db: "postgres", app }], `${name}, pipelineConnect=${pc}`);
      }
    }
    neonConfig.pipelineConnect = false;
    const err = await rejection(new Client(DIRECT_URL.replace(/\/postgres$/, "/nope")).connect());
    assert.deepStrictEqual([err.code, err.message], ["3D000", 'database "nope" does not exist']);
  } finally {
    neonConfig.pipelineConnect = "password";
  }
});

test("a Pool of several clients runs queries side by side", async () => {
  const pool = new Pool({ connectionString: POOLED_URL, max: 6 });
  try {
    const started = Date.now();
    const results = await Promise.all(Array.from({ length: 6 }, (_, i) => pool.query("SELECT $1::int AS i, pg_sleep(0.2)", [i])));
    assert.deepStrictEqual(results.map((r) => r.rows[0].i), [0, 1, 2, 3, 4, 5]);
    assert.ok(Date.now() - started < 6 * 200, `6 × 0.2 s sleeps took ${Date.now() - started} ms: connections were serialised`);
  } finally {
    await within(3000, pool.end(), "pool.end()");
  }
});

test("errors over WebSocket equal pg's over TCP", async () => {
  const client = new Client(DIRECT_URL);
  await client.connect();
  try {
    for (const query of ["SELECT 123 WHERE x", "SELEC 1", "SELECT 1/0", "SELECT 'abc'::int"]) {
      const [wsErr, pgErr] = await Promise.all([rejection(client.query(query)), rejection(tcp.query(query))]);
      assert.equal(wsErr.message, pgErr.message, query);
      assert.deepStrictEqual({ ...wsErr }, { ...pgErr }, query);
    }
  } finally {
    await end(client);
  }
});
