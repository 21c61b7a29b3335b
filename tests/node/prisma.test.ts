// Prisma 7 Client with @prisma/adapter-neon on the local compute: PrismaNeon (WebSocket) and PrismaNeonHttp
// (HTTP). The client is generated offline from prisma/schema.prisma by the pytest wrapper; run with tsx.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { neonConfig } from "@neondatabase/serverless";
import { PrismaNeon, PrismaNeonHttp } from "@prisma/adapter-neon";
import { Prisma, PrismaClient } from "./.generated/prisma/client.ts";
import { DIRECT_URL, POOLED_URL, pointDriverAtCompute, tcpClient } from "./support.mjs";

pointDriverAtCompute();

// the table prisma/schema.prisma maps, in plain SQL (migrations need the schema engine, which is not here offline)
const DDL = `DROP TABLE IF EXISTS prisma_flight;
  CREATE TABLE prisma_flight (id serial PRIMARY KEY, origin text NOT NULL, delay int, fare numeric(10,2),
    booked timestamptz(3) NOT NULL DEFAULT now(), tags text[], payload jsonb)`;

let tcp: Awaited<ReturnType<typeof tcpClient>>;
before(async () => {
  tcp = await tcpClient();
  await tcp.query(DDL);
});
after(() => tcp.end());

const origins = async () =>
  (await tcp.query("SELECT origin FROM prisma_flight ORDER BY id")).rows.map((r: { origin: string }) => r.origin);

/** create / findMany / update / delete through one client, each checked against the table over TCP. */
async function crud(prisma: PrismaClient, tag: string) {
  const booked = new Date(Date.UTC(2024, 4, 6, 7, 8, 9, 123));
  const created = await prisma.flight.create({
    data: { origin: `${tag}-JFK`, delay: 12, fare: new Prisma.Decimal("199.99"), booked, tags: ["a", "b\"c"], payload: { seat: "12A", meal: null } },
  });
  assert.equal(created.origin, `${tag}-JFK`);
  assert.equal(created.fare?.toString(), "199.99");
  assert.equal(created.booked.toISOString(), booked.toISOString());
  assert.deepStrictEqual(created.tags, ["a", "b\"c"]);
  assert.deepStrictEqual(created.payload, { seat: "12A", meal: null });
  await prisma.flight.createMany({ data: [{ origin: `${tag}-LHR`, tags: [] }, { origin: `${tag}-CDG`, delay: null, tags: [] }] });

  const found = await prisma.flight.findMany({ where: { origin: { startsWith: `${tag}-` } }, orderBy: { id: "asc" } });
  assert.deepStrictEqual(found.map((f) => f.origin), [`${tag}-JFK`, `${tag}-LHR`, `${tag}-CDG`]);
  const row = (await tcp.query("SELECT delay, fare::text, tags, payload FROM prisma_flight WHERE id = $1", [created.id])).rows[0];
  assert.deepStrictEqual(row, { delay: 12, fare: "199.99", tags: ["a", "b\"c"], payload: { seat: "12A", meal: null } });

  const updated = await prisma.flight.update({ where: { id: created.id }, data: { delay: { increment: 3 } } });
  assert.equal(updated.delay, 15);
  const many = await prisma.flight.updateMany({ where: { origin: { startsWith: `${tag}-` }, delay: null }, data: { delay: 0 } });
  assert.equal(many.count, 2);
  assert.equal((await prisma.flight.aggregate({ where: { origin: { startsWith: `${tag}-` } }, _sum: { delay: true } }))._sum.delay, 15);

  await prisma.flight.delete({ where: { id: created.id } });
  assert.equal(await prisma.flight.count({ where: { origin: { startsWith: `${tag}-` } } }), 2);
  const gone = await prisma.flight.deleteMany({ where: { origin: { startsWith: `${tag}-` } } });
  assert.equal(gone.count, 2);
  assert.ok(!(await origins()).some((o: string) => o.startsWith(`${tag}-`)));
}

// the pooled case uses LocalCompute.env()'s DATABASE_URL, as a Prisma project would (PgBouncer, ?pgbouncer=true)
const DATABASE_URL = process.env.DATABASE_URL ?? `${POOLED_URL}?pgbouncer=true`;
for (const [name, url] of [["direct", DIRECT_URL], ["pooled", DATABASE_URL]] as const) {
  describe(`PrismaNeon (WebSocket), ${name} URL`, () => {
    const prisma = new PrismaClient({ adapter: new PrismaNeon({ connectionString: url }) });
    after(() => prisma.$disconnect());

    test("create / findMany / update / delete", () => crud(prisma, `ws-${name}`));

    test("an interactive $transaction commits", async () => {
      const tag = `tx-${name}`;
      const result = await prisma.$transaction(async (tx) => {
        const a = await tx.flight.create({ data: { origin: `${tag}-1`, tags: [] } });
        await tx.flight.update({ where: { id: a.id }, data: { delay: 7 } });
        const inside = (await tcp.query("SELECT count(*)::int AS n FROM prisma_flight WHERE origin = $1", [`${tag}-1`])).rows[0].n;
        assert.equal(inside, 0, "not visible outside before COMMIT");
        return tx.flight.count({ where: { origin: `${tag}-1` } });
      });
      assert.equal(result, 1);
      assert.deepStrictEqual((await tcp.query("SELECT delay FROM prisma_flight WHERE origin = $1", [`${tag}-1`])).rows, [{ delay: 7 }]);
    });

    test("an interactive $transaction that throws rolls back", async () => {
      const tag = `rb-${name}`;
      await assert.rejects(prisma.$transaction(async (tx) => {
        await tx.flight.create({ data: { origin: `${tag}-1`, tags: [] } });
        assert.equal(await tx.flight.count({ where: { origin: `${tag}-1` } }), 1);
        throw new Error("abandon the transaction");
      }), /abandon the transaction/);
      assert.equal((await tcp.query("SELECT count(*)::int AS n FROM prisma_flight WHERE origin = $1", [`${tag}-1`])).rows[0].n, 0);
      // a database error inside the transaction rolls it back too, with Prisma's mapping of the Postgres error
      await assert.rejects(prisma.$transaction(async (tx) => {
        await tx.flight.create({ data: { origin: `${tag}-2`, tags: [] } });
        await tx.$executeRaw`INSERT INTO prisma_flight (id, origin) VALUES (1, 'dup'), (1, 'dup')`;
      }), (err: Error & { code?: string }) => err.code === "P2010" || /unique|duplicate/i.test(err.message));
      assert.equal((await tcp.query("SELECT count(*)::int AS n FROM prisma_flight WHERE origin = $1", [`${tag}-2`])).rows[0].n, 0);
    });

    test("a unique violation maps to Prisma's P2002 (code, message, detail and table passed through)", async () => {
      const a = await prisma.flight.create({ data: { origin: `uniq-${name}`, tags: [] } });
      await assert.rejects(prisma.flight.create({ data: { id: a.id, origin: "again", tags: [] } }), (err: any) => {
        assert.equal(err.code, "P2002");
        assert.deepStrictEqual(err.meta?.driverAdapterError?.cause, {
          originalCode: "23505", originalMessage: 'duplicate key value violates unique constraint "prisma_flight_pkey"',
          kind: "UniqueConstraintViolation", constraint: { fields: ["id"] }, table: "prisma_flight",
        });
        return true;
      });
    });
  });
}

describe("PrismaNeon with poolQueryViaFetch (queries over HTTP, transactions over WebSocket)", () => {
  const prisma = new PrismaClient({ adapter: new PrismaNeon({ connectionString: DIRECT_URL }) });
  before(() => { neonConfig.poolQueryViaFetch = true; });
  after(async () => {
    neonConfig.poolQueryViaFetch = false;
    await prisma.$disconnect();
  });

  test("create / findMany / update / delete", () => crud(prisma, "via-fetch"));

  test("an interactive $transaction still works (it needs a WebSocket client)", async () => {
    const n = await prisma.$transaction(async (tx) => {
      await tx.flight.create({ data: { origin: "via-fetch-tx", tags: [] } });
      return tx.flight.count({ where: { origin: "via-fetch-tx" } });
    });
    assert.equal(n, 1);
    assert.equal((await tcp.query("SELECT count(*)::int AS n FROM prisma_flight WHERE origin = 'via-fetch-tx'")).rows[0].n, 1);
  });
});

describe("PrismaNeonHttp (HTTP)", () => {
  const prisma = new PrismaClient({ adapter: new PrismaNeonHttp(DIRECT_URL, {}) });
  after(() => prisma.$disconnect());

  test("create / findMany / update / delete", () => crud(prisma, "http"));

  test("$queryRaw over HTTP", async () => {
    const rows = await prisma.$queryRaw<{ n: number; s: string }[]>`SELECT ${41}::int + 1 AS n, ${"x"}::text AS s`;
    assert.deepStrictEqual(rows, [{ n: 42, s: "x" }]);
  });

  test("a unique violation: the HTTP adapter passes the driver's NeonDbError fields through", async () => {
    const a = await prisma.flight.create({ data: { origin: "uniq-http", tags: [] } });
    // PrismaNeonHttp does not convert driver errors (PrismaNeon does): Prisma reports Postgres's own code
    await assert.rejects(prisma.flight.create({ data: { id: a.id, origin: "again", tags: [] } }), (err: any) => {
      assert.equal(err.code, "23505");
      assert.match(err.message, /duplicate key value violates unique constraint "prisma_flight_pkey"/);
      return true;
    });
  });

  test("$transaction rejects: 'Transactions are not supported in HTTP mode'", async () => {
    await assert.rejects(
      prisma.$transaction(async (tx) => tx.flight.count()),
      /Transactions are not supported in HTTP mode/,
    );
    await assert.rejects(
      prisma.$transaction([prisma.flight.count(), prisma.flight.count()]),
      /Transactions are not supported in HTTP mode/,
    );
  });
});
