// neon_notebook's HTTP transport inside Pyodide (WASM CPython), offline, against the local compute.
//
// Loads Pyodide from node_modules (the core needs no network), mounts the repository so
// `import neon_notebook` finds it, and gives Python a synchronous XMLHttpRequest as a web
// worker has (Node has none): a worker thread does the fetch while the main thread blocks
// on Atomics.wait, then takes the answer with receiveMessageOnPort. Like a browser, it first
// asks the URL's CORS preflight about headers that are not safelisted, and fails the request
// as a network error if one is not allowed (Neon's preflight does not allow Content-Type).
// The Python checks are in PY_CHECKS; any failure exits non-zero with Python's traceback.
// Env: POOLED_URL, DIRECT_URL, HTTP_URL (the compute's), REPO (the repository's root),
// PURE_PACKAGES: host directories of pure-Python dependencies (python-dotenv), ":"-separated,
// as micropip would install them in a browser (its CDN is unreachable here), and
// SUSPEND_AFTER (Python, default None) for connect().

import path from "node:path";
import { MessageChannel, Worker, receiveMessageOnPort } from "node:worker_threads";
import { loadPyodide } from "pyodide";

const { POOLED_URL, DIRECT_URL, HTTP_URL, REPO } = process.env;
if (!POOLED_URL || !DIRECT_URL || !HTTP_URL || !REPO) throw new Error("set POOLED_URL, DIRECT_URL, HTTP_URL and REPO");

// -- a synchronous XMLHttpRequest (the part of it the XhrClient uses) ----------------------------
const FETCHER = `
const { workerData: { flag, port } } = require("node:worker_threads");
const allowed = new Map();  // url -> the header names its CORS preflight allows (cached, as a browser does)
const SAFELISTED = new Set(["accept", "accept-language", "content-language"]);
const SAFE_TYPES = new Set(["application/x-www-form-urlencoded", "multipart/form-data", "text/plain"]);

async function refusedByPreflight(url, headers) {
  const needing = Object.entries(headers).map(([n, v]) => [n.toLowerCase(), v.split(";")[0].trim().toLowerCase()])
    .filter(([n, v]) => !SAFELISTED.has(n) && !(n === "content-type" && SAFE_TYPES.has(v))).map(([n]) => n);
  if (!needing.length) return null;
  if (!allowed.has(url)) {
    const res = await fetch(url, { method: "OPTIONS", headers: { Origin: "http://notebook.example",
      "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": needing.join(",") } });
    const list = res.ok ? res.headers.get("access-control-allow-headers") ?? "" : "";
    allowed.set(url, new Set(list.split(",").map((n) => n.trim().toLowerCase())));
  }
  return needing.find((n) => !allowed.get(url).has(n) && !allowed.get(url).has("*")) ?? null;
}

port.on("message", async ({ method, url, headers, body, timeout }) => {
  let answer;
  try {
    const refused = await refusedByPreflight(url, headers);
    if (refused) throw new Error(\`the CORS preflight does not allow the \${refused} header\`);
    const signal = timeout ? AbortSignal.timeout(timeout) : undefined;
    const res = await fetch(url, { method, headers, body, signal });
    answer = { status: res.status, statusText: res.statusText, text: await res.text() };
  } catch (err) {
    answer = { error: err.name === "TimeoutError" ? "TimeoutError" : "NetworkError", detail: String(err.cause ?? err) };
  }
  port.postMessage(answer);
  Atomics.store(flag, 0, 1);
  Atomics.notify(flag, 0);
});`;
const flag = new Int32Array(new SharedArrayBuffer(4));
const { port1, port2 } = new MessageChannel();
const fetcher = new Worker(FETCHER, { eval: true, workerData: { flag, port: port2 }, transferList: [port2] });
fetcher.unref();
port1.unref();

class SyncXMLHttpRequest {
  timeout = 0;
  status = 0;
  statusText = "";
  responseText = "";
  #request = null;
  open(method, url, async = true) {
    if (async !== false) throw new Error("this XMLHttpRequest is synchronous only");
    this.#request = { method, url, headers: {} };
  }
  setRequestHeader(name, value) { this.#request.headers[name] = String(value); }
  send(body = null) {
    const request = { ...this.#request, body: body === null ? undefined : new Uint8Array(body), timeout: this.timeout };
    Atomics.store(flag, 0, 0);
    port1.postMessage(request);
    Atomics.wait(flag, 0, 0);
    const answer = receiveMessageOnPort(port1).message;
    if (answer.error) {
      const err = new Error(`${answer.error}: ${answer.detail}`);
      err.name = answer.error;  // as a browser's DOMException names it
      throw err;
    }
    Object.assign(this, { status: answer.status, statusText: answer.statusText, responseText: answer.text });
  }
}
globalThis.XMLHttpRequest = SyncXMLHttpRequest;

// -- Python ----------------------------------------------------------------------------------------
const PY_CHECKS = `
import os, sys, decimal
from urllib.parse import urlsplit
sys.path[:0] = ["/nn", "/deps"]
import neon_notebook as nn
from neon_notebook import errors
from neon_notebook.http._client import LostAnswer
from neon_notebook.http._protocol import headers, query_body
from neon_notebook.http._xhr import XhrClient

assert sys.platform == "emscripten", sys.platform
POOLED_URL, DIRECT_URL, HTTP_URL = (os.environ[k] for k in ("POOLED_URL", "DIRECT_URL", "HTTP_URL"))
password = urlsplit(POOLED_URL).password
assert password
s = nn.connect(POOLED_URL, direct_url=DIRECT_URL, transport="http", http_url=HTTP_URL,
               suspend_after=SUSPEND_AFTER)
transport = s._resources.transports["pooled"]
assert type(transport.client) is XhrClient, type(transport.client)

# A cold start whose first wake fails (the test suspended the compute): the retry loop rides it out.
report = s.warm_up()
assert report.attempts == 2 and report.woke and report.server_version, report
assert password not in str(report), str(report)

# Statements: row counts, parameters bound (text beyond ASCII, NULL, numeric).
assert s.execute("drop table if exists pyo_smoke") == -1
assert s.execute("create table pyo_smoke (id int primary key, name text, price numeric(8,2))") == -1
assert s.execute("insert into pyo_smoke values (%s, %s, %s), (%s, %s, %s)",
                 [1, "é ü 🐘", decimal.Decimal("9.50"), 2, None, None]) == 2
assert s.execute("update pyo_smoke set price = price + %s where id = %s", [1, 1]) == 1

# A result's rows, as PostgreSQL's text output (no pyarrow here to type them).
rows = transport.exchange("select id, name, price from pyo_smoke where id >= %s order by id", [1],
                          retry_lost=True).results[-1].rows
assert rows == [["1", "é ü 🐘", "10.50"], ["2", None, None]], rows

# PostgreSQL's error: SQLError (no psycopg), SQLSTATE, position in the user's text, libpq's excerpt.
try:
    s.execute("select 1 from\\n  pyo_nope")
except errors.SQLError as exc:
    assert type(exc) is errors.SQLError, type(exc)
    assert exc.sqlstate == "42P01" and exc.position == 17, (exc.sqlstate, exc.position)
    assert 'relation "pyo_nope" does not exist' in str(exc) and "LINE 2:" in str(exc), str(exc)
else:
    raise AssertionError("no SQLError")

# read_arrow needs pyarrow (Pyodide fetches it from its CDN, unreachable here): it says so, sending nothing.
try:
    s.read_arrow("select 1")
except ImportError as exc:
    assert exc.name == "pyarrow", exc
    arrow_error = f"{type(exc).__name__}: {exc}"
else:
    raise AssertionError("read_arrow worked without pyarrow")

# No answer (nothing listens): a write is not re-sent (CommitUncertain), a read once (ConnectError).
dead = nn.connect(POOLED_URL, transport="http", http_url="http://127.0.0.1:1/sql", suspend_after=None)
for call, error in [(lambda: dead.execute("insert into pyo_smoke values (3)"), nn.CommitUncertain),
                    (lambda: dead._exchange("select 1", None, False, read=True), nn.ConnectError)]:
    try:
        call()
    except error as exc:
        assert "got no answer" in str(exc) and password not in str(exc), str(exc)
    else:
        raise AssertionError(f"no {error.__name__}")
dead.close()

# A request past its timeout: LostAnswer; the server cancels the query; the session goes on.
try:
    transport.client.post(query_body("select pg_sleep(10)", []), headers(transport._connection_string),
                          timeout=0.3)
except LostAnswer as exc:
    assert "TimeoutError" in str(exc) and password not in str(exc), str(exc)
else:
    raise AssertionError("no LostAnswer")
assert s.execute("delete from pyo_smoke where id = %s", [2]) == 1

assert s.state is nn.ComputeState.ACTIVE, s.state
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("psycopg", "psycopg_pool", "pyarrow"))
assert not loaded, loaded
s.close()
print("read_arrow without pyarrow ->", arrow_error)
`;

const started = performance.now();
try {
  const pyodide = await loadPyodide();
  const loaded = performance.now();
  pyodide.mountNodeFS("/nn", REPO);
  for (const dir of (process.env.PURE_PACKAGES ?? "").split(":").filter(Boolean)) {
    pyodide.mountNodeFS(`/deps/${path.basename(dir)}`, dir);
  }
  pyodide.runPython("import os; os.environ.update(" + JSON.stringify({ POOLED_URL, DIRECT_URL, HTTP_URL }) + ")");
  pyodide.runPython(PY_CHECKS.replace("SUSPEND_AFTER", process.env.SUSPEND_AFTER ?? "None"));
  const done = performance.now();
  console.log(`PYODIDE-SMOKE-OK load ${(loaded - started).toFixed(0)} ms, checks ${(done - loaded).toFixed(0)} ms`);
} catch (err) {
  // Not the default report: it quotes a line of pyodide.asm.mjs, megabytes long.
  console.error(`${err.constructor?.name}: ${err.message}`);
  process.exitCode = 1;
}
