// Shared set-up for the driver tests: the local compute's endpoints (from the pytest wrapper's environment),
// the driver pointed at them, node-postgres over TCP as the oracle, and the driver's own result normalisation.
import assert from "node:assert/strict";
import { neonConfig } from "@neondatabase/serverless";
import pg from "pg";
import ws from "ws";

function required(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run these tests through tests/test_serverless_driver.py`);
  return value;
}

export const DIRECT_URL = required("DIRECT_URL");
export const POOLED_URL = required("POOLED_URL");
export const HTTP_URL = required("HTTP_URL");
export const WS_PROXY = required("WS_PROXY");

/** Neon's driver on the local compute: plain HTTP and WebSocket on loopback, no TLS anywhere. */
export function pointDriverAtCompute() {
  neonConfig.fetchEndpoint = HTTP_URL;
  neonConfig.webSocketConstructor = ws;
  neonConfig.wsProxy = WS_PROXY;
  neonConfig.useSecureWebSocket = false;
  neonConfig.pipelineTLS = false;
}

/** A node-postgres client over TCP on the compute's direct endpoint: what every result is compared with. */
export async function tcpClient(url = DIRECT_URL) {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  return client;
}

/** Connection strings as users paste them (Neon's console adds sslmode/channel_binding, Prisma pgbouncer=true). */
export const pastedUrls = () => ({
  "sslmode=require&channel_binding=require": `${DIRECT_URL}?sslmode=require&channel_binding=require`,
  "pooled, pgbouncer=true&connect_timeout=15": `${POOLED_URL}?pgbouncer=true&connect_timeout=15`,
  "host localhost": DIRECT_URL.replace("127.0.0.1", "localhost"),
  "options=endpoint%3D…": `${DIRECT_URL}?options=endpoint%3Dep-local-123`,
  "application_name=mine": `${DIRECT_URL}?application_name=mine`,
  "percent-encoded user": DIRECT_URL.replace("//postgres:", "//post%67res:"),
});

/** The URL with its password replaced (for the authentication tests). */
export function withPassword(url, password) {
  const u = new URL(url);
  u.password = password;
  return u.toString();
}

/** The URL with its user replaced. */
export function withUser(url, user) {
  const u = new URL(url);
  u.username = user;
  return u.toString();
}

// The driver's own tests (tests/cli/ws.test.ts) compare results after turning functions into arity
// placeholders: the driver bundles a minified pg, so its parser functions differ from pg's by identity only.
// Dates and byte arrays keep their values here, and every object becomes a plain one (as the driver's
// `{ ...f }` on Field instances does), so deepStrictEqual compares data, not prototypes.
export function plain(x) {
  if (typeof x === "function") return `__fn_arity_${x.length}__`;
  if (x instanceof Date) return { $date: Number.isNaN(x.getTime()) ? "Invalid Date" : x.toISOString() };
  if (x instanceof Uint8Array) return { $bytes: Buffer.from(x).toString("hex") };
  if (Array.isArray(x)) return x.map(plain);
  if (x !== null && typeof x === "object") {
    return Object.fromEntries(Object.entries(x).map(([k, v]) => [k, plain(v)]));
  }
  return x;
}

/**
 * The driver's HTTP-vs-pg normalisation (tests/cli/http.test.ts): the accepted differences of a fetch result
 * (no `oid`, no `RowCtor`, plain fields, `viaNeonFetch`), plus two of pg's own that the driver's sample
 * queries never meet: pg's `parseRow` own property in array mode, and `_parsers` left undefined without fields.
 */
export function assertHttpResultMatchesPg(httpResult, pgResult, label) {
  const http = { ...httpResult, oid: null, RowCtor: null };
  const { parseRow, ...pgRest } = pgResult;
  const tcp = { ...pgRest, _parsers: pgResult._parsers ?? [], fields: pgResult.fields.map((f) => ({ ...f })), viaNeonFetch: true };
  assert.deepStrictEqual(plain(http), plain(tcp), label);
}

/** The driver's error normalisation (tests/cli/http.test.ts): NeonDbError and pg's DatabaseError, field by field. */
export function assertErrorMatchesPg(httpErr, pgErr, label) {
  assert.equal(httpErr.name, "NeonDbError", label);
  assert.equal(httpErr.message, pgErr.message, label);
  const http = { ...httpErr, length: pgErr.length, name: pgErr.name };
  const tcp = { ...pgErr, sourceError: undefined };
  assert.deepStrictEqual(http, tcp, label);
}

/** The rejection of a promise (fails when it resolves). */
export async function rejection(promise) {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  assert.fail("expected the query to fail");
}

/** Resolves with the promise's value, or fails after ms milliseconds (so a hang is a failure, not a stuck run). */
export function within(ms, promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
