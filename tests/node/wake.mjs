// One step of the lifecycle check in tests/test_serverless_driver.py (the compute is suspended before it):
// `http` / `ws` query through the driver (the request waits through the cold start); `refused` tries a wrong
// password on both paths, which must fail without waking anything.
import assert from "node:assert/strict";
import { Client, neon, neonConfig } from "@neondatabase/serverless";
import { DIRECT_URL, pointDriverAtCompute, rejection, within, withPassword } from "./support.mjs";

pointDriverAtCompute();
const step = process.argv[2];
if (step === "http") {
  assert.deepStrictEqual(await neon(DIRECT_URL)`SELECT ${"awake"}::text AS s`, [{ s: "awake" }]);
} else if (step === "ws") {
  const client = new Client(DIRECT_URL);
  await client.connect();
  assert.deepStrictEqual((await client.query("SELECT 'awake' AS s")).rows, [{ s: "awake" }]);
  await within(3000, client.end(), "client.end()");
} else if (step === "refused") {
  const bad = withPassword(DIRECT_URL, "wrong-password");
  const err = await rejection(neon(bad)`SELECT 1`);
  assert.match(err.message, /^password authentication failed/);
  neonConfig.pipelineConnect = false; // so connect() itself reports the refusal
  const wsErr = await rejection(new Client(bad).connect());
  assert.match(wsErr.message, /^password authentication failed/);
} else {
  throw new Error(`unknown step ${step}`);
}
console.log(`${step}: ok`);
