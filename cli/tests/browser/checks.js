// The page side of the browser tests. Sent through WebDriver `execute/async` as a function body:
// arguments[0] is the check's name, the last argument the callback, which gets
// { ok, detail, error, ms } (error: the JS error, with WebTransportError's source and streamErrorCode).
// Needs the page of `tern serve --web` (window.TERN = { url, hash, hashBytes }).

const done = arguments[arguments.length - 1];
const check = arguments[0];
const browser = arguments[1];
const params = arguments[2];

const base = TERN.url.replace(/\/$/, "");
const hashes = () => [{ algorithm: "sha-256", value: TERN.hashBytes }];

function connect(path) {
  const wt = new WebTransport(base + path, { serverCertificateHashes: hashes() });
  // Nobody may await these; keep a rejection from being reported as unhandled.
  wt.ready.catch(() => {});
  wt.closed.catch(() => {});
  return wt;
}

function describe(e) {
  if (e === undefined) return "undefined";
  if (e === null) return "null";
  if (typeof e !== "object") return String(e);
  let s = `${e.name || (e.constructor && e.constructor.name) || "Error"}: ${e.message || ""}`;
  const extra = [];
  if ("source" in e) extra.push(`source ${e.source}`);
  if ("streamErrorCode" in e) extra.push(`streamErrorCode ${e.streamErrorCode}`);
  if (extra.length) s += ` (${extra.join(", ")})`;
  return s;
}

// Cross-realm checks: under geckodriver the script's globals are not the page's, so `instanceof` fails.
const isBytes = (x) => Object.prototype.toString.call(x) === "[object Uint8Array]";
const isWebTransportError = (e) => !!e && (e instanceof WebTransportError || e.name === "WebTransportError" ||
  Object.prototype.toString.call(e) === "[object WebTransportError]");

function fail(msg) {
  throw new Error(msg);
}

function timeout(p, ms, what) {
  let t;
  return Promise.race([
    p,
    new Promise((_, reject) => {
      t = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(t));
}

// Deterministic pseudo-random bytes (xorshift32).
function bytes(n, seed) {
  const a = new Uint8Array(n);
  let x = (Math.imul(seed + 1, 2654435761) >>> 0) || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    a[i] = x & 0xff;
  }
  return a;
}

// Why `got` is not `want`, or null when equal.
function diff(got, want) {
  if (!isBytes(got)) return `got ${Object.prototype.toString.call(got)}, not bytes`;
  const n = Math.min(got.length, want.length);
  for (let i = 0; i < n; i++) {
    if (got[i] !== want[i]) return `byte ${i} of ${want.length} is ${got[i]}, expected ${want[i]}` +
      (got.length !== want.length ? ` (and got ${got.length} bytes)` : "");
  }
  if (got.length !== want.length) return `got ${got.length} bytes, expected ${want.length} (the common prefix matches)`;
  return null;
}

const text = (b) => new TextDecoder().decode(b);

async function readAll(readable, limit) {
  const r = readable.getReader();
  const chunks = [];
  let n = 0;
  for (;;) {
    const { value, done } = await r.read();
    if (done) break;
    chunks.push(value);
    n += value.length;
    if (n > limit) fail(`more than ${limit} bytes on the stream`);
  }
  const out = new Uint8Array(n);
  let off = 0;
  for (const c of chunks) { out.set(c, off); off += c.length; }
  return out;
}

async function writeAll(writable, data, close = true) {
  const w = writable.getWriter();
  const step = 64 * 1024;
  for (let off = 0; off < data.length; off += step) {
    await w.write(data.subarray(off, Math.min(off + step, data.length)));
  }
  if (close) await w.close(); else w.releaseLock();
}

// 10 datagrams one after the other, each echoed byte-exact, then one of exactly maxDatagramSize bytes.
async function datagramEcho(wt, count, tag) {
  const w = wt.datagrams.writable.getWriter();
  const r = wt.datagrams.readable.getReader();
  const sizes = [];
  for (let i = 0; i < count; i++) {
    const d = bytes(1 + i * 100, 1000 * tag + i);
    sizes.push(d.length);
    await w.write(d);
    const { value } = await timeout(r.read(), 5000, `the echo of datagram ${i + 1} of ${count} (${d.length} B)`);
    const e = diff(value, d);
    if (e) fail(`datagram ${i + 1} of ${count} (${d.length} B): ${e}`);
  }
  const max = wt.datagrams.maxDatagramSize;
  if (typeof max !== "number" || !(max > 0)) fail(`datagrams.maxDatagramSize is ${max}`);
  const big = bytes(max, 1000 * tag + 999);
  await w.write(big);
  const { value } = await timeout(r.read(), 5000, `the echo of a datagram of maxDatagramSize (${max} B)`);
  const e = diff(value, big);
  if (e) fail(`datagram of maxDatagramSize (${max} B): ${e}`);
  w.releaseLock();
  r.releaseLock();
  return { sizes, max };
}

async function bidiEcho(wt, n, seed) {
  const s = await timeout(wt.createBidirectionalStream(), 5000, "createBidirectionalStream");
  const data = bytes(n, seed);
  const t0 = performance.now();
  const [, got] = await timeout(Promise.all([writeAll(s.writable, data), readAll(s.readable, 2 * n)]), 30000,
    `the echo of ${n} B on a bidi stream`);
  const e = diff(got, data);
  if (e) fail(`bidi echo of ${n} B: ${e}`);
  return performance.now() - t0;
}

async function uniEcho(wt, n, seed) {
  const incoming = wt.incomingUnidirectionalStreams.getReader();
  const s = await timeout(wt.createUnidirectionalStream(), 5000, "createUnidirectionalStream");
  const data = bytes(n, seed);
  await timeout(writeAll(s, data), 30000, `writing ${n} B on a uni stream`);
  const { value: rs, done } = await timeout(incoming.read(), 10000, "the server's uni stream with the echo");
  incoming.releaseLock();
  if (done) fail("incomingUnidirectionalStreams ended");
  const got = await timeout(readAll(rs, 2 * n), 30000, `the ${n} B echo on the server's uni stream`);
  const e = diff(got, data);
  if (e) fail(`uni echo of ${n} B: ${e}`);
}

async function ready(wt, what) {
  await timeout(wt.ready, 10000, `ready (${what})`);
}

async function closeQuietly(wt) {
  try { wt.close({ closeCode: 0, reason: "" }); } catch (_) {}
  await timeout(wt.closed, 5000, "closed after close()").catch(() => {});
}

const MiB = 1024 * 1024;

// A WebTransportError carrying a stream error code. The spec's constructor is (message, { source,
// streamErrorCode }) (Firefox); Chromium's is ({ message, streamErrorCode }) and refuses the other form.
function streamError(code) {
  const tries = [
    () => new WebTransportError("aborted by the page", { source: "stream", streamErrorCode: code }),
    () => new WebTransportError({ message: "aborted by the page", streamErrorCode: code }),
  ];
  const errors = [];
  for (const t of tries) {
    try {
      const e = t();
      if (e.streamErrorCode === code) return e;
      errors.push(`constructed one with streamErrorCode ${e.streamErrorCode}`);
    } catch (e) {
      errors.push(describe(e));
    }
  }
  fail(`cannot make a WebTransportError with streamErrorCode ${code}: ${errors.join("; ")}`);
}

const checks = {
  async datagrams() {
    const wt = connect("/echo?check=datagrams");
    await ready(wt, "/echo");
    const { sizes, max } = await datagramEcho(wt, 10, 1);
    await closeQuietly(wt);
    return `10 datagrams (${sizes[0]}..${sizes[sizes.length - 1]} B) echoed byte-exact; ` +
      `maxDatagramSize ${max} B, a datagram of that size echoed byte-exact`;
  },

  async bidi() {
    const wt = connect("/echo?check=bidi");
    await ready(wt, "/echo");
    const ms = await bidiEcho(wt, MiB, 2);
    await closeQuietly(wt);
    return `1 MiB echoed byte-exact in ${ms.toFixed(0)} ms`;
  },

  async uni() {
    const wt = connect("/echo?check=uni");
    await ready(wt, "/echo");
    await uniEcho(wt, 64 * 1024, 3);
    await closeQuietly(wt);
    return "64 KiB echoed byte-exact on a server uni stream";
  },

  async server_streams() {
    const wt = connect("/push");
    await ready(wt, "/push");
    const bidis = wt.incomingBidirectionalStreams.getReader();
    const unis = wt.incomingUnidirectionalStreams.getReader();
    const { value: bs, done: bdone } = await timeout(bidis.read(), 10000, "the server's bidi stream");
    if (bdone) fail("incomingBidirectionalStreams ended without a stream");
    const reply = new TextEncoder().encode("page reply");
    const [, bgot] = await timeout(Promise.all([writeAll(bs.writable, reply), readAll(bs.readable, 1024)]), 10000,
      "the server's bidi stream to end (and our reply to be written)");
    if (text(bgot) !== "server bidi") fail(`server bidi stream carried ${JSON.stringify(text(bgot))}, expected "server bidi"`);
    const { value: us, done: udone } = await timeout(unis.read(), 10000, "the server's uni stream");
    if (udone) fail("incomingUnidirectionalStreams ended without a stream");
    const ugot = await timeout(readAll(us, 1024), 10000, "the server's uni stream to end");
    if (text(ugot) !== "server uni") fail(`server uni stream carried ${JSON.stringify(text(ugot))}, expected "server uni"`);
    bidis.releaseLock();
    unis.releaseLock();
    await closeQuietly(wt);
    return `received "server bidi" (replied "page reply") and "server uni"`;
  },

  async server_close() {
    const wt = connect("/close?code=42&reason=bye");
    await ready(wt, "/close");
    let info;
    try {
      info = await timeout(wt.closed, 5000, "closed (the server closes after ~200 ms)");
    } catch (e) {
      fail(`closed rejected instead of resolving: ${describe(e)}`);
    }
    if (!info || info.closeCode !== 42 || info.reason !== "bye") {
      fail(`closed resolved with closeCode ${info && info.closeCode}, reason ${JSON.stringify(info && info.reason)}; ` +
        `expected 42 and "bye"`);
    }
    return `closed resolved with closeCode 42, reason "bye"`;
  },

  async page_close() {
    const wt = connect("/echo?check=page_close");
    await ready(wt, "/echo");
    wt.close({ closeCode: 7, reason: "done" });
    let info;
    try {
      info = await timeout(wt.closed, 5000, "closed after close({closeCode: 7})");
    } catch (e) {
      fail(`closed rejected after our own close(): ${describe(e)}`);
    }
    return `closed with 7 "done" (page's closed resolved: ${JSON.stringify(info)})`;
  },

  async no_route() {
    const wt = connect("/no-such-route");
    try {
      await timeout(wt.ready, 10000, "ready to reject");
    } catch (e) {
      if (/timed out/.test(e.message)) throw e;
      return `ready rejected: ${describe(e)}`;
    }
    fail("ready resolved for a path with no route");
  },

  // Two bidi streams on /reset?code=99; the server reads each to its end, then resets it with 99.
  // 1. The page reads only after the reset has had time to arrive: the read must reject with a
  //    WebTransportError with streamErrorCode 99 (in every browser).
  // 2. The page's read is pending when the reset arrives: the same in Chromium. Firefox ESR races there:
  //    its stream's data pipe fails ("TypeError: Error in input stream") before the message carrying
  //    the code arrives, so a TypeError is tolerated for Firefox only and reported as such.
  async server_reset() {
    const wt = connect("/reset?code=99");
    await ready(wt, "/reset");
    const readError = async (r) => {
      try {
        for (;;) {
          const { done } = await timeout(r.read(), 5000, "the server's reset of the stream");
          if (done) fail("the stream ended normally (FIN) instead of being reset");
        }
      } catch (err) {
        if (/timed out|ended normally/.test(err.message || "")) throw err;
        return err;
      }
    };
    const want99 = (e, how) => {
      if (!isWebTransportError(e)) fail(`${how}: read rejected with ${describe(e)}, not a WebTransportError`);
      if (e.streamErrorCode !== 99) fail(`${how}: read rejected with ${describe(e)}; expected streamErrorCode 99`);
    };
    // 1. Read after the reset arrived.
    const a = await timeout(wt.createBidirectionalStream(), 5000, "createBidirectionalStream");
    await timeout(writeAll(a.writable, new TextEncoder().encode("reset me")), 5000, "writing on the stream");
    await new Promise((res) => setTimeout(res, 500));
    const ea = await readError(a.readable.getReader());
    want99(ea, "read after the reset arrived");
    // 2. Read pending while the reset arrives.
    const b = await timeout(wt.createBidirectionalStream(), 5000, "createBidirectionalStream");
    const rb = b.readable.getReader();
    const pending = readError(rb);
    await timeout(writeAll(b.writable, new TextEncoder().encode("reset me too")), 5000, "writing on the stream");
    const eb = await pending;
    let note = "";
    if (browser === "firefox" && !isWebTransportError(eb) && eb && eb.name === "TypeError") {
      note = `; with a read pending: ${describe(eb)} (Firefox race, tolerated: no code reaches the page)`;
    } else {
      want99(eb, "read pending while the reset arrived");
      note = "; the same with a read pending";
    }
    await closeQuietly(wt);
    return `read rejected with ${describe(ea)}${note}`;
  },

  async page_abort() {
    const wt = connect("/echo?check=page_abort");
    await ready(wt, "/echo");
    const s = await timeout(wt.createBidirectionalStream(), 5000, "createBidirectionalStream");
    const w = s.writable.getWriter();
    await timeout(w.write(bytes(1024, 5)), 5000, "writing 1 KiB");
    // Give the data a moment to leave so the server sees the stream before its reset.
    await new Promise((res) => setTimeout(res, 100));
    await timeout(w.abort(streamError(5)), 5000, "abort()");
    // Keep the session open while the reset reaches the server.
    await new Promise((res) => setTimeout(res, 500));
    await closeQuietly(wt);
    return "aborted the writable of a bidi stream with streamErrorCode 5";
  },

  // The pin must matter: a wrong hash, and no hash at all (the certificate is self-signed), both fail.
  async cert_pinning() {
    const wrong = new Uint8Array(32);
    for (let i = 0; i < 32; i++) wrong[i] = TERN.hashBytes[i] ^ (i === 0 ? 0xff : 0);
    const cases = [
      ["a wrong serverCertificateHashes value", { serverCertificateHashes: [{ algorithm: "sha-256", value: wrong }] }],
      ["no serverCertificateHashes", {}],
    ];
    const seen = [];
    for (const [what, options] of cases) {
      const wt = new WebTransport(base + "/echo?check=cert_pinning", options);
      wt.closed.catch(() => {});
      let resolved = false;
      try {
        await timeout(wt.ready, 10000, `ready to reject with ${what}`);
        resolved = true;
      } catch (e) {
        if (/timed out/.test(e.message || "")) throw e;
        seen.push(`${what}: ${describe(e)}`);
      }
      if (resolved) {
        try { wt.close(); } catch (_) {}
        fail(`ready resolved with ${what}: the certificate was not checked`);
      }
    }
    return `ready rejected with ${seen.join("; with ")}`;
  },

  async concurrent() {
    const n = 10;
    const t0 = performance.now();
    // Every session stays open until all are ready, so the 10 are open at the same moment.
    let open = 0;
    let allOpen;
    const everyoneOpen = new Promise((res) => { allOpen = res; });
    const one = async (i) => {
      const wt = connect(`/echo?check=concurrent-${i}`);
      try {
        await ready(wt, `/echo, session ${i + 1} of ${n}`);
        if (++open === n) allOpen();
        const { max } = await datagramEcho(wt, 10, 100 + i);
        await bidiEcho(wt, MiB, 200 + i);
        await uniEcho(wt, 64 * 1024, 300 + i);
        await timeout(everyoneOpen, 20000, `all ${n} sessions to be ready (${open} are)`);
        await closeQuietly(wt);
        return max;
      } catch (e) {
        try { wt.close(); } catch (_) {}
        throw new Error(`session ${i + 1} of ${n}: ${describe(e)}`);
      }
    };
    const results = await Promise.allSettled([...Array(n).keys()].map(one));
    const failed = results.filter((r) => r.status === "rejected").map((r) => r.reason.message);
    if (failed.length) fail(`${failed.length} of ${n} sessions failed: ${failed.join("; ")}`);
    return `${n} sessions open at once: each echoed 10 datagrams + one of maxDatagramSize, 1 MiB bidi, 64 KiB uni ` +
      `byte-exact (${(performance.now() - t0).toFixed(0)} ms)`;
  },
};

// One session of the "10 pages at once" check, in its own tab: waits for the wall-clock time
// params.startAt, connects, runs the echo checks, and stays open until params.holdUntil.
async function tabSession(params) {
  const wait = params.startAt - Date.now();
  if (wait > 0) await new Promise((res) => setTimeout(res, wait));
  const wt = connect(`/echo?check=tab-${params.index}`);
  await ready(wt, `/echo, tab ${params.index + 1}`);
  const readyAt = Date.now();
  const { max } = await datagramEcho(wt, 10, 400 + params.index);
  await bidiEcho(wt, MiB, 500 + params.index);
  await uniEcho(wt, 64 * 1024, 600 + params.index);
  const echoedAt = Date.now();
  const hold = params.holdUntil - Date.now();
  if (hold > 0) await new Promise((res) => setTimeout(res, hold));
  let closedEarly = null;
  wt.closed.then((i) => { closedEarly = i; }, (e) => { closedEarly = e; });
  await Promise.resolve();
  if (closedEarly) fail(`the session closed before the hold time: ${describe(closedEarly)}`);
  await closeQuietly(wt);
  return { readyAt, echoedAt, closedAt: Date.now(), max };
}

if (check === "tab_start") {
  window.__ternTab = { done: false };
  (async () => {
    try {
      window.__ternTab = { done: true, ok: true, times: await tabSession(params) };
    } catch (e) {
      window.__ternTab = { done: true, ok: false, error: describe(e) };
    }
  })();
  done({ ok: true, detail: "started" });
  return;
}
if (check === "tab_result") {
  done(window.__ternTab || { done: false, ok: false, error: "no tab session was started in this page" });
  return;
}

(async () => {
  const t0 = performance.now();
  try {
    if (typeof WebTransport === "undefined") fail("WebTransport is not defined in this page");
    if (!window.TERN || !isBytes(TERN.hashBytes) || TERN.hashBytes.length !== 32) fail("the page defines no window.TERN with hashBytes");
    const f = checks[check];
    if (!f) fail(`no check named ${check}`);
    const detail = await f();
    done({ ok: true, detail, ms: performance.now() - t0 });
  } catch (e) {
    done({ ok: false, error: describe(e), ms: performance.now() - t0 });
  }
})();
