// The Node load generator of wschat's benchmarks: the workloads of
// benchmarks/loadgen.py, same flags, same JSON result (one object on the last line).
//
// Why a second generator: the Python one (asyncio protocols on uvloop) runs at 92-97%
// of its core in W1 while driving the raw baseline, so raw was measured below its own
// limit. Here every client is a `ws` WebSocket (the npm package, with its native
// bufferutil/utf-8-validate helpers when they load) on one Node event loop, which
// spends a fraction of that CPU per delivered frame. A client counts chat messages
// with Buffer.indexOf over each message (inside `batch` frames too), like the Python
// generator counts them over each read. Client frames are masked with a zero key.
//
// Run by benchmarks/run.py pinned to core 1:
//   node benchmarks/node/loadgen.mjs w1 --port P --pid SERVER_PID --n 100
// Timestamps are CLOCK_MONOTONIC seconds (process.hrtime), the clock of the servers'
// time.perf_counter: run.py compares W5's `window` with the server's GC log.

import { execFileSync } from "node:child_process";
import { createHmac } from "node:crypto";
import { readFileSync } from "node:fs";
import http from "node:http";
import { createRequire } from "node:module";
import net from "node:net";
import { parseArgs } from "node:util";

import WebSocket from "ws";

const require = createRequire(import.meta.url);
const HOST = "127.0.0.1";
// benchmarks/common.py's SECRET and ALGORITHM (tests/project/test_benchmarks_smoke.py checks).
export const SECRET = "benchmark-secret-not-for-production-0123456789";
const PAT_MSG = Buffer.from('"type":"message"');
const PAT_READY = Buffer.from('"type":"ready"');
const PAT_PRESENCE = Buffer.from('"type":"presence"');
const WS_KEY = "dGhlIHNhbXBsZSBub25jZQ==";

export const now = () => {
  const [s, ns] = process.hrtime();
  return s + ns / 1e9;
};
const sleep = (seconds) =>
  new Promise((resolve) => setTimeout(resolve, Math.max(0, seconds * 1000)));

function getconf(name, fallback) {
  try {
    return Number(execFileSync("getconf", [name], { encoding: "utf8" }).trim());
  } catch {
    return fallback;
  }
}
const CLK_TCK = getconf("CLK_TCK", 100);
const PAGE_SIZE = getconf("PAGESIZE", 4096);

// -- /proc of the server and our own CPU --------------------------------------------

function statFields(pid) {
  const text = readFileSync(`/proc/${pid}/stat`, "utf8");
  return text.slice(text.lastIndexOf(")") + 2).split(" ");
}

/** [user, system] CPU seconds used so far by process `pid`. */
export function cpuSplit(pid) {
  const f = statFields(pid);
  return [Number(f[11]) / CLK_TCK, Number(f[12]) / CLK_TCK];
}

/** User plus system CPU seconds used so far by process `pid`. */
export function cpuSeconds(pid) {
  const [user, system] = cpuSplit(pid);
  return user + system;
}

/** Resident set size of process `pid` in bytes. */
export function rssBytes(pid) {
  const statm = readFileSync(`/proc/${pid}/statm`, "utf8").split(" ");
  return Number(statm[1]) * PAGE_SIZE;
}

/** This process's user plus system CPU seconds. */
function ownCpu() {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

/** This process's [user, system] CPU seconds. */
function ownSplit() {
  const u = process.cpuUsage();
  return [u.user / 1e6, u.system / 1e6];
}

// -- tokens ---------------------------------------------------------------------------

const b64url = (buf) => Buffer.from(buf).toString("base64url");

/** A valid HS256 token for `sub`, like benchmarks.common.make_token. */
export function makeToken(sub, lifetime = 3600) {
  const iat = Math.floor(Date.now() / 1000);
  const head = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const body = b64url(JSON.stringify({ sub, iat, exp: iat + lifetime }));
  const sig = createHmac("sha256", SECRET).update(`${head}.${body}`).digest();
  return `${head}.${body}.${b64url(sig)}`;
}

// -- statistics -----------------------------------------------------------------------

/** The `q` quantile (0..1) of `values`, like loadgen.pct; null when empty. */
function pct(values, q) {
  if (!values.length) return null;
  const ordered = Float64Array.from(values).sort();
  return ordered[Math.min(ordered.length - 1, Math.floor(q * ordered.length))];
}
const ms = (v) => (v === null || v === undefined ? null : round(v * 1000, 3));
const round = (v, digits) => {
  const k = 10 ** digits;
  return Math.round(v * k) / k;
};
function median(values) {
  if (!values.length) return null;
  const s = [...values].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** How many times `pat` occurs in `buf[start:end]`. */
function countOf(buf, pat, start, end) {
  let n = 0;
  let i = buf.indexOf(pat, start);
  while (i >= 0 && i + pat.length <= end) {
    n += 1;
    i = buf.indexOf(pat, i + pat.length);
  }
  return n;
}

// -- clients --------------------------------------------------------------------------

/** Hooks a workload sets to see messages as clients count them. */
class Counter {
  constructor() {
    this.total = 0;
  }
  onMessages(client, first, count) {
    this.total += count;
  }
}

const messagePayload = (body) => Buffer.from(`{"type":"message","body":"${body}"}`);
const zeroMask = (mask) => mask.fill(0);

/** What every client kind shares: counting chat messages (inside `batch` frames
 * too), the `ready` frame, the close code. */
class Client {
  constructor(counter, index, tag) {
    this.counter = counter;
    this.index = index;
    this.tag = tag;
    this.rx = 0;
    this.seen = 0;
    this.own = 0;
    this.acked = 0;
    this.closeCode = null;
    this.error = null;
    this.lostAt = null;
    this.readyAt = null;
    // What the server sent after the handshake (the storm reads these): frames,
    // their bytes (headers included), the size of the `ready` frame, the time of the
    // last read that completed a frame; with `watch` set, how many frames were
    // `presence` and the payload of the last one.
    this.frames = 0;
    this.frameBytes = 0;
    this.readyBytes = null;
    this.lastFrameAt = null;
    this.watch = false;
    this.presenceFrames = 0;
    this.lastPresence = null;
    // The reconnect storm's hook: called with every whole frame's payload.
    this.inspect = null;
    this.ready = new Promise((resolve, reject) => {
      this._ready = resolve;
      this._notReady = reject;
    });
    this.ready.catch(() => {});
    this.lost = new Promise((resolve) => {
      this._lost = resolve;
    });
  }

  get isLost() {
    return this.lostAt !== null;
  }

  /** One whole frame from the server: its payload is `data[start:end]`, after a
   * header of `head` bytes. Counts frames and bytes; with `watch`, presence. */
  onFrame(data, start, end, head) {
    if (this.inspect !== null) this.inspect(this, data.subarray(start, end));
    this.frames += 1;
    this.frameBytes += head + end - start;
    if (this.readyBytes === null && data.subarray(start, end).indexOf(PAT_READY) >= 0) {
      this.readyBytes = head + end - start;
    }
    if (this.watch && data.subarray(start, end).indexOf(PAT_PRESENCE) >= 0) {
      this.presenceFrames += 1;
      this.lastPresence = Buffer.from(data.subarray(start, end));
    }
  }

  /** Count what `data[start:end]` holds: whole frames or whole messages. */
  onData(data, start, end) {
    if (this.readyAt === null && data.subarray(start, end).indexOf(PAT_READY) >= 0) {
      this.readyAt = now();
      this._ready(this.readyAt);
    }
    if (this.tag !== null) this.own += countOf(data, this.tag, start, end);
    const count = countOf(data, PAT_MSG, start, end);
    if (count) {
      const first = this.seen;
      this.seen = first + count;
      this.counter.onMessages(this, first, count);
    }
  }

  onClosed() {
    if (this.lostAt !== null) return;
    this.lostAt = now();
    this._lost(this.lostAt);
    if (this.readyAt === null) this._notReady(new Error(this.error || "closed early"));
  }
}

/** A client on the `ws` package: a full WebSocket client (one event per message). */
class WsClient extends Client {
  constructor(counter, index, address, { tag = null, deflate = false, socket = null }) {
    super(counter, index, tag);
    const ws = new WebSocket(address, {
      perMessageDeflate: deflate,
      skipUTF8Validation: true,
      generateMask: zeroMask,
      maxPayload: 0,
      ...(socket ? { createConnection: socket } : {}),
    });
    this.ws = ws;
    ws.on("message", (data) => {
      this.rx += data.length;
      this.onFrame(data, 0, data.length, data.length < 126 ? 2 : data.length < 65536 ? 4 : 10);
      this.lastFrameAt = now();
      this.onData(data, 0, data.length);
    });
    ws.on("unexpected-response", (_req, res) => {
      this.error = `HTTP ${res.statusCode}`;
      res.resume();
      ws.terminate();
    });
    ws.on("error", (err) => {
      this.error ??= err.code || err.message;
    });
    ws.on("close", (code) => {
      this.closeCode = code;
      this.onClosed();
    });
  }

  send(payload) {
    this.ws.send(payload, { binary: false, compress: false });
  }

  close(code = 1000) {
    this.ws.close(code);
  }

  abort() {
    this.ws.terminate();
  }

  pause() {
    this.ws.pause();
  }

  resume() {
    this.ws.resume();
  }
}

/** A client frame with a zero mask key (the payload stays as is). */
function clientFrame(payload, opcode = 1) {
  const n = payload.length;
  let head;
  if (n < 126) {
    head = Buffer.from([0x80 | opcode, 0x80 | n, 0, 0, 0, 0]);
  } else if (n < 65536) {
    head = Buffer.from([0x80 | opcode, 0xfe, n >> 8, n & 0xff, 0, 0, 0, 0]);
  } else {
    head = Buffer.alloc(14);
    head[0] = 0x80 | opcode;
    head[1] = 0xff;
    head.writeBigUInt64BE(BigInt(n), 2);
  }
  return Buffer.concat([head, payload]);
}

/** The lean client: a TCP socket, the upgrade written by hand, server frames parsed
 * by their headers only and chat messages counted over each read, like
 * benchmarks/loadgen.py's `Client`. Pings are answered; close frames recorded. */
class LeanClient extends Client {
  constructor(counter, index, request, { tag = null, socket = null, port }) {
    super(counter, index, tag);
    this.open = false;
    this.buf = null;
    const sock = socket ? socket() : net.connect(port, HOST);
    sock.setNoDelay(true);
    this.socket = sock;
    sock.on("connect", () => sock.write(request));
    sock.on("data", (data) => this.onRead(data));
    sock.on("error", (err) => {
      this.error ??= err.code || err.message;
    });
    sock.on("close", () => this.onClosed());
  }

  onRead(chunk) {
    this.rx += chunk.length;
    let data = chunk;
    if (this.buf !== null) {
      data = Buffer.concat([this.buf, chunk]);
      this.buf = null;
    }
    let i = 0;
    if (!this.open) {
      const end = data.indexOf("\r\n\r\n");
      if (end < 0) {
        this.buf = data;
        return;
      }
      if (data.latin1Slice(0, 12) !== "HTTP/1.1 101") {
        this.error = data.latin1Slice(0, data.indexOf("\r\n"));
        this.socket.destroy();
        return;
      }
      this.open = true;
      i = end + 4;
    }
    const start = i;
    const n = data.length;
    let stop = i;
    while (n - i >= 2) {
      let size = data[i + 1] & 0x7f;
      let head = 2;
      if (size === 126) {
        if (n - i < 4) break;
        size = (data[i + 2] << 8) | data[i + 3];
        head = 4;
      } else if (size === 127) {
        if (n - i < 10) break;
        size = Number(data.readBigUInt64BE(i + 2));
        head = 10;
      }
      const end = i + head + size;
      if (end > n) break;
      if ((data[i] & 0x0f) >= 8) {
        this.control(data[i] & 0x0f, data.subarray(i + head, end));
      } else {
        this.onFrame(data, i + head, end, head);
      }
      i = end;
      stop = end;
    }
    if (i < n) this.buf = data.subarray(i);
    if (stop > start) {
      this.lastFrameAt = now();
      this.onData(data, start, stop);
    }
  }

  control(opcode, payload) {
    if (opcode === 9) {
      this.socket.write(clientFrame(payload, 10));
    } else if (opcode === 8) {
      this.closeCode = payload.length >= 2 ? payload.readUInt16BE(0) : 1005;
      if (!this.socket.destroyed) {
        this.socket.end(clientFrame(payload.subarray(0, 2), 8));
      }
    }
  }

  send(payload) {
    this.socket.write(clientFrame(payload));
  }

  close(code = 1000) {
    const body = Buffer.alloc(2);
    body.writeUInt16BE(code);
    this.socket.write(clientFrame(body, 8));
  }

  abort() {
    this.socket.destroy();
  }

  pause() {
    this.socket.pause();
  }

  resume() {
    this.socket.resume();
  }
}

/** The HTTP upgrade request of one client (token in the query). */
function upgradeRequest(port, room, user, { batch = false, query = "" } = {}) {
  let target = `/ws/chat/${room}?token=${makeToken(user)}`;
  if (batch) target += "&batch=1";
  if (query) target += `&${query}`;
  return Buffer.from(
    [
      `GET ${target} HTTP/1.1`,
      `Host: ${HOST}:${port}`,
      "Upgrade: websocket",
      "Connection: Upgrade",
      `Sec-WebSocket-Key: ${WS_KEY}`,
      "Sec-WebSocket-Version: 13",
    ].join("\r\n") + "\r\n\r\n",
  );
}

/** Read moderation (`--coalesce-us`): between two turns of the event loop, block the
 * thread this long so that frames gather in the kernel's socket buffers and each read
 * takes many at once (what a NIC's interrupt moderation does). 0: off. */
const WAIT_CELL = new Int32Array(new SharedArrayBuffer(4));
let moderating = false;
function moderate(us) {
  if (us <= 0 || moderating) return () => {};
  moderating = true;
  const turn = () => {
    if (!moderating) return;
    Atomics.wait(WAIT_CELL, 0, 0, us / 1000);
    setImmediate(turn);
  };
  setImmediate(turn);
  return () => {
    moderating = false;
  };
}

/** `--coalesce-us` by default: in W1 with one frame per message, 20 us per member
 * (1 ms to 20 ms); nothing elsewhere.
 *
 * In W1 every member gets one frame per message; with the room's 32 messages in
 * flight that is one frame every ~1 ms per socket at N = 100 and every ~10 ms at
 * N = 1,000, so reading each socket as soon as it is readable costs one read (and
 * its share of TCP acknowledgements) per frame, about as much CPU as the server
 * spends sending it. Waiting about two frames' worth between turns halves that and
 * more. The wait adds to the measured latency (at most the wait; W1's latency is its
 * closed loop's queue, ~20 ms at N = 100 and ~300 ms at N = 1,000). Not with `batch`
 * frames: a read takes many messages anyway, and there the added latency would cap
 * the closed loop (32 messages in flight at ~6 ms). Not with permessage-deflate: the
 * `ws` client inflates on libuv's thread pool, ten messages at a time, and each
 * finished inflation waits for the next turn of the loop (one measured run: 1,400
 * deliveries/s instead of ~100,000). Not in the workloads that measure
 * milliseconds of latency (W2, FLOOD, churn), nor W3, where the server is far slower
 * than the generator.
 */
function autoCoalesce(workload, args) {
  if (workload !== "w1" || args.batch || args.deflate) return 0;
  return Math.min(20000, Math.max(1000, 20 * args.n));
}

/** `--client`: `lean` (the default) or `ws`; permessage-deflate always takes `ws`.
 *
 * The lean client does not inflate: Node's zlib has no synchronous inflater that
 * keeps its context from one call to the next (`zlib.inflateRawSync` is one-shot), and
 * the servers compress with context takeover. `ws` inflates on the thread pool, which
 * costs more than the server's compression: at W1 N = 100 it ran at 96% of its core
 * for 28,000 deliveries/s where loadgen.py (zlib.decompressobj, once per read) drove
 * 62,000 at 30%. So benchmarks/run.py keeps its Deflate workload on loadgen.py. */
let CLIENT = "lean";

/** One client of user `u<index>` in `room`, connecting now. */
function newClient(counter, port, index, room, opts = {}) {
  const { batch = false, deflate = false, tag = null, socket = null, query = "" } = opts;
  if (CLIENT === "ws" || deflate) {
    let address = `ws://${HOST}:${port}/ws/chat/${room}?token=${makeToken(`u${index}`)}`;
    if (batch) address += "&batch=1";
    if (query) address += `&${query}`;
    return new WsClient(counter, index, address, { tag, deflate, socket });
  }
  const request = upgradeRequest(port, room, `u${index}`, { batch, query });
  return new LeanClient(counter, index, request, { tag, socket, port });
}

function withTimeout(promise, seconds, what = "timeout") {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(what)), seconds * 1000);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** Open one client and wait for its `ready` frame. */
async function connect(counter, port, index, room, opts = {}) {
  const { timeout = 30, ...rest } = opts;
  const client = newClient(counter, port, index, room, rest);
  await withTimeout(client.ready, timeout);
  return client;
}

/** Open `n` clients, `parallel` handshakes at a time. */
async function connectMany(counter, port, n, roomOf, { parallel = 100, ...opts } = {}) {
  const clients = new Array(n);
  let next = 0;
  async function worker() {
    while (next < n) {
      const i = next++;
      clients[i] = await connect(counter, port, i, roomOf(i), opts);
    }
  }
  await Promise.all(Array.from({ length: Math.min(parallel, n) }, worker));
  return clients;
}

/** A server below this share of a core is idle: no frames queued, only timers. */
const SERVER_IDLE_SHARE = 0.2;

/** Wait until no client has received anything for `quiet` seconds (true), or `limit`
 * seconds (false). With `pid`, the server must also have been idle meanwhile (below
 * SERVER_IDLE_SHARE of a core): a server stalled in a long GC pass on a busy machine
 * can send nothing for a while and still have frames queued. */
async function settle(clients, quiet = 0.3, limit = 20, pid = null) {
  const deadline = now() + limit;
  const rx = () => clients.reduce((s, c) => s + c.rx, 0);
  while (now() < deadline) {
    const before = rx();
    const cpu = pid === null ? 0 : cpuSeconds(pid);
    await sleep(quiet);
    const busy = pid === null ? 0 : (cpuSeconds(pid) - cpu) / quiet;
    if (rx() === before && busy < SERVER_IDLE_SHARE) return true;
  }
  return false;
}

function closeAll(clients) {
  for (const c of clients) c.abort();
}

const closedEarly = (clients) => clients.filter((c) => c.isLost).length;

// -- W1 fan-out, closed loop ----------------------------------------------------------

/** Closed loop: the sender keeps `window` messages in flight; a message is done once
 * every member (the sender included) has received it. */
class FanOut extends Counter {
  constructor(members, window, body) {
    super();
    this.members = members;
    this.window = window;
    this.arrivals = [];
    this.sentAt = [];
    this.latencies = [];
    this.measuring = false;
    this.sending = false;
    this.completed = 0;
    this.sender = null;
    this.payload = messagePayload(body);
    this.done = new Promise((resolve) => {
      this._done = resolve;
    });
  }

  sendOne() {
    this.arrivals.push(0);
    this.sentAt.push(now());
    this.sender.send(this.payload);
  }

  onMessages(client, first, count) {
    this.total += count;
    const { arrivals, members } = this;
    const stop = first + count;
    for (let k = first; k < stop; k++) {
      arrivals[k] += 1;
      if (arrivals[k] === members) {
        this.completed += 1;
        if (this.sending) this.sendOne();
        else if (this.completed === arrivals.length) this._done();
      }
    }
    if (this.measuring) {
      const t = now();
      for (let k = first; k < stop; k++) this.latencies.push(t - this.sentAt[k]);
    }
  }
}

async function w1(args) {
  const fan = new FanOut(args.n, args.window, "x".repeat(args.body));
  const started = now();
  const clients = await connectMany(fan, args.port, args.n, () => "bench", {
    batch: args.batch,
    deflate: args.deflate,
  });
  const filled = now();
  fan.sender = clients[0];
  // A big room's joins may keep the server busy with presence long after the last
  // `ready` (O(N^2) frames before presence was coalesced): wait up to
  // `--settle-limit` s for it to go quiet, and say whether it did.
  const settled = await settle(clients, 0.3, args["settle-limit"], args.pid);
  const quietAt = now();
  const stopModerating = moderate(args["coalesce-us"]);
  fan.total = 0;
  fan.sending = true;
  for (let i = 0; i < args.window; i++) fan.sendOne();
  await sleep(args.warmup);
  fan.measuring = true;
  const [s0, o0] = [cpuSplit(args.pid), ownSplit()];
  const [d0, c0, g0, t0] = [fan.total, cpuSeconds(args.pid), ownCpu(), now()];
  await sleep(args.duration);
  const [d1, c1, g1, t1] = [fan.total, cpuSeconds(args.pid), ownCpu(), now()];
  const [s1, o1] = [cpuSplit(args.pid), ownSplit()];
  fan.measuring = false;
  fan.sending = false;
  stopModerating();
  let lost = 0;
  try {
    await withTimeout(fan.done, 20);
  } catch {
    lost = fan.arrivals.length * args.n - fan.total;
  }
  const elapsed = t1 - t0;
  const deliveries = d1 - d0;
  const per = Math.max(deliveries, 1);
  const result = {
    n: args.n,
    messages_sent: fan.arrivals.length,
    deliveries_total: fan.total,
    deliveries_expected: fan.arrivals.length * args.n,
    lost,
    deliveries_per_s: round(deliveries / elapsed, 1),
    p50_ms: ms(pct(fan.latencies, 0.5)),
    p99_ms: ms(pct(fan.latencies, 0.99)),
    server_cpu_pct: round((100 * (c1 - c0)) / elapsed, 1),
    server_us_per_delivery: round((1e6 * (c1 - c0)) / per, 3),
    server_user_us_per_delivery: round((1e6 * (s1[0] - s0[0])) / per, 3),
    server_sys_us_per_delivery: round((1e6 * (s1[1] - s0[1])) / per, 3),
    loadgen_cpu_pct: round((100 * (g1 - g0)) / elapsed, 1),
    loadgen_user_pct: round((100 * (o1[0] - o0[0])) / elapsed, 1),
    loadgen_sys_pct: round((100 * (o1[1] - o0[1])) / elapsed, 1),
    server_rss_mb: round(rssBytes(args.pid) / 2 ** 20, 1),
    closed_early: closedEarly(clients),
    fill_s: round(filled - started, 3),
    settle_s: round(quietAt - filled, 3),
    settled,
  };
  closeAll(clients);
  return result;
}

// -- W2 slow consumer -----------------------------------------------------------------

/** Timestamps every delivery to the healthy clients of an open-loop sender. */
class OpenLoop extends Counter {
  constructor(slow) {
    super();
    this.sentAt = [];
    this.slow = slow;
    this.arrivals = []; // arrival time of each delivery to a healthy client
    this.latencies = []; // and its latency
  }

  onMessages(client, first, count) {
    this.total += count;
    if (client.index === this.slow) return;
    const t = now();
    for (let k = first; k < first + count; k++) {
      this.arrivals.push(t);
      this.latencies.push(t - this.sentAt[k]);
    }
  }
}

/** `slow_consumers` from wschat's `/ws/status`; null if there is none. */
function statusSlowConsumers(port) {
  return new Promise((resolve) => {
    const req = http.get(
      { host: HOST, port, path: "/ws/status", agent: false, timeout: 2000 },
      (res) => {
        const chunks = [];
        res.on("data", (c) => chunks.push(c));
        res.on("end", () => {
          if (res.statusCode !== 200) return resolve(null);
          try {
            const value = JSON.parse(Buffer.concat(chunks).toString()).slow_consumers;
            resolve(Number.isInteger(value) ? value : null);
          } catch {
            resolve(null);
          }
        });
      },
    );
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", () => resolve(null));
  });
}

/** A TCP socket to the server whose receive buffer is `rcvbuf` bytes.
 *
 * Node cannot set SO_RCVBUF itself, so run.py passes a socket it made (unconnected,
 * SO_RCVBUF set, like loadgen.py's slow client) as file descriptor `fd`.
 */
function socketFromFd(fd, port) {
  const { TCP, constants } = process.binding("tcp_wrap");
  const handle = new TCP(constants.SOCKET);
  const err = handle.open(fd);
  if (err) throw new Error(`cannot open fd ${fd}: ${err}`);
  const socket = new net.Socket({ handle, manualStart: true });
  socket.connect(port, HOST);
  return socket;
}

async function w2(args) {
  const slowIndex = args.n - 1;
  const loop = new OpenLoop(slowIndex);
  const clients = await connectMany(loop, args.port, args.n - 1, () => "slow", {
    batch: args.batch,
  });
  let slow;
  let slowRcvbuf = "kernel default";
  if (args["rcvbuf-fd"] !== undefined) {
    const fd = Number(args["rcvbuf-fd"]);
    slowRcvbuf = "65536 (SO_RCVBUF, from run.py)";
    slow = newClient(loop, args.port, slowIndex, "slow", {
      batch: args.batch,
      socket: () => socketFromFd(fd, args.port),
    });
    await withTimeout(slow.ready, 30);
  } else {
    slow = await connect(loop, args.port, slowIndex, "slow", { batch: args.batch });
  }
  await settle([...clients, slow]);
  const sender = clients[0];
  const payload = messagePayload("x".repeat(args.body));
  const rss = [];
  let closedAt = null;
  const watchStatus = (await statusSlowConsumers(args.port)) !== null;
  const g0 = ownCpu();
  const t0 = now();
  const pausedAt = t0 + args["pause-at"];
  const end = t0 + args.duration;
  const interval = 1 / args.rate;
  let nextSend = t0;
  let nextSample = t0;
  let paused = false;
  for (;;) {
    const t = now();
    if (t >= end) break;
    if (!paused && t >= pausedAt) {
      slow.pause();
      paused = true;
    }
    while (nextSend <= t) {
      loop.sentAt.push(now());
      sender.send(payload);
      nextSend += interval;
    }
    if (t >= nextSample) {
      rss.push([round(t - t0, 2), round(rssBytes(args.pid) / 2 ** 20, 1)]);
      nextSample += 0.5;
      if (watchStatus && closedAt === null && paused) {
        const count = await statusSlowConsumers(args.port);
        if (count) {
          closedAt = now();
          // Come back a moment later: is the close code waiting for it?
          setTimeout(() => slow.resume(), 500);
        }
      }
    }
    await sleep(Math.min(nextSend, nextSample) - now());
  }
  const g1 = ownCpu();
  const sent = loop.sentAt.length;
  await sleep(1);
  const healthy = clients.filter((c) => !c.isLost);
  // Let the slow client read again: what did the server tell it, if anything?
  slow.resume();
  try {
    await withTimeout(slow.lost, 5);
  } catch {
    // still open
  }

  function window(a, b) {
    // Throughput by arrival time; latency by send time, so that messages held up by
    // a frozen room count with their full delay when they finally arrive.
    let count = 0;
    const lats = [];
    for (let i = 0; i < loop.arrivals.length; i++) {
      const t = loop.arrivals[i] - t0;
      const lat = loop.latencies[i];
      if (a <= t && t < b) count += 1;
      if (a <= t - lat && t - lat < b) lats.push(lat);
    }
    return [count / (b - a), pct(lats, 0.99)];
  }

  const [beforeRate, beforeP99] = window(0.5, args["pause-at"]);
  const [afterRate, afterP99] = window(args["pause-at"], args.duration);
  const [tailRate, tailP99] = window(args.duration / 2, args.duration);
  const expected = sent * (args.n - 1);
  const got = clients.reduce((s, c) => s + c.seen, 0);
  const rssValues = rss.map(([, v]) => v);
  const result = {
    n: args.n,
    healthy_rate_before: round(beforeRate, 1),
    healthy_rate_after: round(afterRate, 1),
    healthy_rate_last_half: round(tailRate, 1),
    throughput_ratio: beforeRate ? round(afterRate / beforeRate, 3) : null,
    p99_before_ms: ms(beforeP99),
    p99_after_ms: ms(afterP99),
    p99_last_half_ms: ms(tailP99),
    p99_ratio: beforeP99 && afterP99 ? round(afterP99 / beforeP99, 3) : null,
    healthy_undelivered: expected - got,
    healthy_closed: clients.length - healthy.length,
    slow_closed_after_pause_s: closedAt ? round(closedAt - pausedAt, 2) : null,
    slow_close_code: slow.closeCode,
    slow_rcvbuf: slowRcvbuf,
    rss_mb_start: rssValues.length ? rssValues[0] : null,
    rss_mb_max: rssValues.length ? Math.max(...rssValues) : null,
    rss_mb_end: rssValues.length ? rssValues[rssValues.length - 1] : null,
    rss_mb: rss,
    loadgen_cpu_pct: round((100 * (g1 - g0)) / args.duration, 1),
  };
  closeAll([...clients, slow]);
  return result;
}

// -- W3 many rooms --------------------------------------------------------------------

/** Every client keeps one message in flight, acknowledged by its own echo. */
class Rooms extends Counter {
  constructor() {
    super();
    this.running = true;
    this.payloads = new Map();
  }

  onMessages(client, first, count) {
    this.total += count;
    while (this.running && client.own > client.acked) {
      client.acked += 1;
      client.send(this.payloads.get(client.index));
    }
  }
}

async function w3(args) {
  const rooms = new Rooms();
  const n = args.rooms * args.size;
  const clients = await connectMany(
    rooms,
    args.port,
    n,
    (i) => `r${Math.floor(i / args.size)}`,
    { batch: args.batch },
  );
  for (const c of clients) {
    const tag = `~c${c.index}~`;
    c.tag = Buffer.from(tag);
    rooms.payloads.set(c.index, messagePayload(tag + "x".repeat(args.body)));
  }
  await settle(clients);
  const stopModerating = moderate(args["coalesce-us"]);
  for (const c of clients) {
    for (let i = 0; i < args.window; i++) c.send(rooms.payloads.get(c.index));
  }
  await sleep(args.warmup);
  const [d0, c0, g0, t0] = [rooms.total, cpuSeconds(args.pid), ownCpu(), now()];
  await sleep(args.duration);
  const [d1, c1, g1, t1] = [rooms.total, cpuSeconds(args.pid), ownCpu(), now()];
  rooms.running = false;
  stopModerating();
  const elapsed = t1 - t0;
  const result = {
    clients: n,
    deliveries_per_s: round((d1 - d0) / elapsed, 1),
    server_cpu_pct: round((100 * (c1 - c0)) / elapsed, 1),
    server_us_per_delivery: round((1e6 * (c1 - c0)) / Math.max(d1 - d0, 1), 3),
    loadgen_cpu_pct: round((100 * (g1 - g0)) / elapsed, 1),
    closed_early: closedEarly(clients),
  };
  closeAll(clients);
  return result;
}

// -- W4 idle memory -------------------------------------------------------------------

async function w4(args) {
  const counter = new Counter();
  const warm = await connectMany(
    counter,
    args.port,
    50,
    (i) => `w${Math.floor(i / args.size)}`,
    { parallel: 50 },
  );
  await settle(warm);
  await sleep(0.5);
  const rss0 = rssBytes(args.pid);
  const g0 = ownCpu();
  const t0 = now();
  const clients = await connectMany(
    counter,
    args.port,
    args.n,
    (i) => `r${Math.floor(i / args.size)}`,
    { parallel: 200 },
  );
  const g1 = ownCpu();
  const t1 = now();
  await settle(clients, 0.5);
  await sleep(1);
  const rss1 = rssBytes(args.pid);
  const result = {
    n: args.n,
    rss_mb_before: round(rss0 / 2 ** 20, 1),
    rss_mb_after: round(rss1 / 2 ** 20, 1),
    kib_per_connection: round((rss1 - rss0) / args.n / 1024, 2),
    closed_early: closedEarly(clients),
    loadgen_cpu_pct: round((100 * (g1 - g0)) / (t1 - t0), 1),
  };
  closeAll([...warm, ...clients]);
  return result;
}

// -- W5 connect storm -----------------------------------------------------------------

async function w5(args) {
  const counter = new Counter();
  const clients = [];
  const failures = [];
  const [c0, g0, t0] = [cpuSeconds(args.pid), ownCpu(), now()];
  await Promise.all(
    Array.from({ length: args.n }, async (_, i) => {
      const client = newClient(counter, args.port, i, `r${Math.floor(i / args.size)}`);
      clients.push(client);
      try {
        await withTimeout(client.ready, args.timeout, "TimeoutError");
      } catch (err) {
        failures.push(err.message);
      }
    }),
  );
  const ready = clients.filter((c) => c.readyAt !== null).map((c) => c.readyAt);
  const t1 = ready.length ? Math.max(...ready) : now();
  const [c1, g1] = [cpuSeconds(args.pid), ownCpu()];
  const p50 = median(ready.map((r) => r - t0));
  const result = {
    n: args.n,
    all_ready_s: round(t1 - t0, 3),
    p50_ready_s: p50 === null ? null : round(p50, 3),
    ready: ready.length,
    failures: failures.length + (args.n - ready.length - failures.length),
    failure_kinds: [...new Set(failures)].sort(),
    server_cpu_s: round(c1 - c0, 3),
    loadgen_cpu_s: round(g1 - g0, 3),
    loadgen_cpu_pct: round((100 * (g1 - g0)) / Math.max(t1 - t0, 1e-9), 1),
    // CLOCK_MONOTONIC, the server's time.perf_counter: run.py counts the server's
    // GC collections inside this window.
    window: [t0, t1],
  };
  closeAll(clients);
  return result;
}

// -- join storm into one room --------------------------------------------------------

/** `n` clients join one room at once, at most `parallel` handshakes in flight (the
 * server's accept queue, uvicorn's backlog of 2,048, would drop the SYNs of more and
 * the kernel would retry them a second later). Done when every client has its
 * `ready` frame and no client has received anything for `quiet` seconds: `storm_s`
 * runs from the first connect to the last frame any client received (the quiet window
 * not counted), and, when the server sends presence, the first client's last `presence`
 * frame counts all `n`. `bytes_total`: every frame the server sent after the handshakes,
 * headers included. Gives up after `timeout` seconds (`finished: false`).
 *
 * The frames are counted, not parsed, so any presence shape works (one frame per
 * join, or coalesced `joins`/`leaves` lists; a full or a bounded member list in
 * `ready`). The first client to join sees every later join: the `count` of the last
 * `presence` frame it got is reported (`last_presence_count`, N when presence is
 * right and carries a count; null when there was none, as with `raw`). */
async function storm(args) {
  const counter = new Counter();
  const n = args.n;
  const clients = [];
  const failures = [];
  let next = 0;
  const [c0, g0, t0] = [cpuSeconds(args.pid), ownCpu(), now()];
  const deadline = t0 + args.timeout;
  async function worker() {
    while (next < n && now() < deadline) {
      const i = next++;
      const client = newClient(counter, args.port, i, "storm");
      client.watch = i === 0;
      clients.push(client);
      try {
        await withTimeout(client.ready, Math.max(0.001, deadline - now()), "TimeoutError");
      } catch (err) {
        failures.push(err.message);
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(args.parallel, n) }, worker));
  const readyTimes = clients.filter((c) => c.readyAt !== null).map((c) => c.readyAt);
  const allReady = readyTimes.length === n ? Math.max(...readyTimes) : null;
  const g1 = ownCpu();
  const t1 = now();
  const lastFrame = () => clients.reduce((m, c) => Math.max(m, c.lastFrameAt ?? 0), t0);
  // A server that sends presence is not done before the first member has been told
  // the whole room: a quiet window shorter than a count that waits for its interval
  // would otherwise end the storm before its last presence frame.
  const countDone = () => {
    const last = clients[0]?.lastPresence ?? null;
    if (last === null) return true;
    try {
      return JSON.parse(last.toString()).count === n;
    } catch {
      return true;
    }
  };
  // Quiet: no frame for `quiet` seconds and the server idle over them (a server
  // stalled in a long GC pass sends nothing for a while with frames still queued).
  const samples = []; // [time, server CPU seconds]
  let finished = false;
  while (allReady !== null && now() < deadline) {
    const t = now();
    samples.push([t, cpuSeconds(args.pid)]);
    while (samples.length > 1 && samples[1][0] <= t - args.quiet) samples.shift();
    const [ta, ca] = samples[0];
    const idle =
      t - ta >= args.quiet && (samples[samples.length - 1][1] - ca) / (t - ta) < SERVER_IDLE_SHARE;
    if (idle && lastFrame() <= ta && countDone()) {
      finished = true;
      break;
    }
    await sleep(Math.min(0.05, args.quiet / 5));
  }
  const [c2, g2, t2] = [cpuSeconds(args.pid), ownCpu(), now()];
  const end = finished ? Math.max(lastFrame(), allReady) : t2;
  const sum = (f) => clients.reduce((s, c) => s + f(c), 0);
  const bytes = sum((c) => c.frameBytes);
  const readyBytes = clients.filter((c) => c.readyBytes !== null).map((c) => c.readyBytes);
  const first = clients[0];
  let lastCount = null;
  if (first && first.lastPresence !== null) {
    try {
      const count = JSON.parse(first.lastPresence.toString()).count;
      lastCount = Number.isInteger(count) ? count : null;
    } catch {
      lastCount = null;
    }
  }
  const p50 = median(readyTimes.map((r) => r - t0));
  const result = {
    n,
    finished,
    timeout_s: args.timeout,
    quiet_s: args.quiet,
    parallel: Math.min(args.parallel, n),
    storm_s: finished ? round(end - t0, 3) : null,
    all_ready_s: allReady === null ? null : round(allReady - t0, 3),
    p50_ready_s: p50 === null ? null : round(p50, 3),
    // After the last `ready`: how long presence kept arriving.
    tail_s: finished ? round(end - allReady, 3) : null,
    ready: readyTimes.length,
    failures: n - readyTimes.length,
    failure_kinds: [...new Set(failures)].sort(),
    closed_early: closedEarly(clients),
    frames_total: sum((c) => c.frames),
    bytes_total: bytes,
    bytes_per_client: round(bytes / n, 1),
    ready_bytes_total: readyBytes.reduce((s, b) => s + b, 0),
    ready_bytes_max: readyBytes.length ? Math.max(...readyBytes) : null,
    first_client_frames: first ? first.frames : 0,
    first_client_presence_frames: first ? first.presenceFrames : 0,
    last_presence_count: lastCount,
    server_cpu_s: round(c2 - c0, 3),
    server_cpu_pct: round((100 * (c2 - c0)) / Math.max(end - t0, 1e-9), 1),
    // The generator's CPU over the whole storm (what it spent after the last frame,
    // polling for quiet, is next to nothing), and over the joins alone.
    loadgen_cpu_s: round(g2 - g0, 3),
    loadgen_cpu_pct: round((100 * (g2 - g0)) / Math.max(end - t0, 1e-9), 1),
    loadgen_cpu_pct_joins: round((100 * (g1 - g0)) / Math.max(t1 - t0, 1e-9), 1),
    server_rss_mb: round(rssBytes(args.pid) / 2 ** 20, 1),
    window: [t0, end],
  };
  closeAll(clients);
  return result;
}

// -- reconnect storm ------------------------------------------------------------------

const OFFSET_RE = /"offset":(\d+)/;

/** One client of `u<index>` that hands every frame to `inspect`; resolves when ready. */
async function openInspected(port, index, room, inspect, { query = "", timeout = 60 } = {}) {
  const client = newClient(new Counter(), port, index, room, { query });
  client.inspect = inspect;
  await withTimeout(client.ready, timeout, "TimeoutError");
  return client;
}

/** What one reconnecting client saw: `ready`'s fields and the offsets of its messages. */
function tracker(i, state) {
  return (client, payload) => {
    if (payload.indexOf(PAT_MSG) >= 0) {
      const m = OFFSET_RE.exec(payload.latin1Slice(0, payload.length));
      if (m === null) return;
      const off = Number(m[1]);
      const s = state[i];
      if (s.seen.has(off)) s.duplicates += 1;
      else if (off < s.last) s.outOfOrder += 1;
      s.seen.add(off);
      if (off > s.last) s.last = off;
      if (s.doneAt === null && s.target !== null && s.last >= s.target && s.readyAt !== null) {
        s.doneAt = now();
      }
    } else if (payload.indexOf(PAT_READY) >= 0) {
      const ready = JSON.parse(payload.toString());
      const s = state[i];
      s.readyAt = now();
      s.epoch = ready.epoch ?? null;
      s.readyOffset = ready.offset ?? null;
      s.recovered = ready.recovered ?? null;
      if (s.last < 0 && Number.isInteger(ready.offset)) s.readyLast = ready.offset;
      if (s.target !== null && s.waitReadyOnly) s.doneAt = s.readyAt;
    }
  };
}

const freshState = () => ({
  seen: new Set(),
  last: -1,
  duplicates: 0,
  outOfOrder: 0,
  readyAt: null,
  doneAt: null,
  epoch: null,
  readyOffset: null,
  readyLast: null,
  recovered: null,
  target: null,
  waitReadyOnly: false,
});

/** N clients in one room drop at once; `--backlog` messages are sent while they are
 * away; all reconnect at once (`--parallel` handshakes in flight) with
 * `?since=<their last offset>&epoch=<epoch>` (`--since 0`: without, the plain rejoin
 * for comparison). Measures the time until every client has `ready` and, with
 * `since`, every missed message, and checks each got each missed offset exactly once
 * and in order. */
async function reconnect(args) {
  const n = args.n;
  const room = "recon";
  const warm = 5;
  const withSince = args.since !== 0;
  const limit = args.timeout;
  // 1. The room fills (100 handshakes at a time), and a sender joins it.
  let state = Array.from({ length: n }, freshState);
  const members = [];
  let next = 0;
  async function fill() {
    while (next < n) {
      const i = next++;
      members[i] = await openInspected(args.port, i, room, tracker(i, state));
    }
  }
  await Promise.all(Array.from({ length: Math.min(100, n) }, fill));
  const senderState = [freshState()];
  const sender = await openInspected(args.port, n, room, tracker(0, senderState));
  const body = "x".repeat(args.body);
  const payload = messagePayload(body);
  const waitFor = async (cond, what) => {
    const deadline = now() + limit;
    while (!cond()) {
      if (now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await sleep(0.005);
    }
  };
  // 2. A few messages everyone receives: each member's last offset before the drop.
  for (let k = 0; k < warm; k++) sender.send(payload);
  await waitFor(() => senderState[0].last >= 0 && senderState[0].seen.size >= warm, "warm-up");
  const warmLast = senderState[0].last;
  await waitFor(() => state.every((s) => s.last >= warmLast), "warm-up deliveries");
  const since = state.map((s) => s.last);
  const epochs = state.map((s) => s.epoch);
  // 3. Everyone drops at once; the sender sends the backlog meanwhile.
  for (const c of members) c.abort();
  for (let k = 0; k < args.backlog; k++) sender.send(payload);
  const target = warmLast + args.backlog;
  await waitFor(() => senderState[0].last >= target, "the backlog");
  // 4. Everyone reconnects at once.
  state = Array.from({ length: n }, () => ({ ...freshState(), target, waitReadyOnly: !withSince }));
  const again = [];
  const failures = [];
  const [c0, g0, t0] = [cpuSeconds(args.pid), ownCpu(), now()];
  next = 0;
  async function rejoin() {
    while (next < n) {
      const i = next++;
      const query = withSince
        ? `since=${since[i]}&epoch=${encodeURIComponent(epochs[i] ?? "")}`
        : "";
      try {
        again[i] = await openInspected(args.port, i, room, tracker(i, state), {
          query,
          timeout: Math.max(0.001, t0 + limit - now()),
        });
      } catch (err) {
        failures.push(err.message);
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(args.parallel, n) }, rejoin));
  await waitFor(
    () => state.every((s) => s.doneAt !== null) || now() > t0 + limit,
    "recovery",
  ).catch(() => {});
  const doneTimes = state.filter((s) => s.doneAt !== null).map((s) => s.doneAt);
  const finished = doneTimes.length === n;
  const end = finished ? Math.max(...doneTimes) : now();
  const [c1, g1] = [cpuSeconds(args.pid), ownCpu()];
  // Late frames would be duplicates: wait for quiet before counting.
  await settle(again.filter(Boolean), 0.3, 5);
  let lost = 0;
  if (withSince) {
    for (let i = 0; i < n; i++) {
      for (let off = since[i] + 1; off <= target; off++) {
        if (!state[i].seen.has(off)) lost += 1;
      }
    }
  }
  const sum = (f) => state.reduce((t, s) => t + f(s), 0);
  const p50 = median(doneTimes.map((t) => t - t0));
  const result = {
    n,
    backlog: args.backlog,
    since: withSince,
    finished,
    timeout_s: limit,
    parallel: Math.min(args.parallel, n),
    recover_s: finished ? round(end - t0, 3) : null,
    p50_recover_s: p50 === null ? null : round(p50, 3),
    all_ready_s: state.every((s) => s.readyAt !== null)
      ? round(Math.max(...state.map((s) => s.readyAt)) - t0, 3)
      : null,
    ready: sum((s) => (s.readyAt !== null ? 1 : 0)),
    recovered: sum((s) => (s.recovered === true ? 1 : 0)),
    not_recovered: sum((s) => (s.recovered === false ? 1 : 0)),
    expected_replayed: withSince ? since.reduce((t, v) => t + (target - v), 0) : 0,
    replayed: sum((s) => s.seen.size),
    lost,
    duplicates: sum((s) => s.duplicates),
    out_of_order: sum((s) => s.outOfOrder),
    failures: failures.length,
    failure_kinds: [...new Set(failures)].sort(),
    closed_early: closedEarly(again.filter(Boolean)),
    frames_total: again.reduce((t, c) => t + (c ? c.frames : 0), 0),
    bytes_total: again.reduce((t, c) => t + (c ? c.frameBytes : 0), 0),
    server_cpu_s: round(c1 - c0, 3),
    server_cpu_pct: round((100 * (c1 - c0)) / Math.max(end - t0, 1e-9), 1),
    loadgen_cpu_s: round(g1 - g0, 3),
    loadgen_cpu_pct: round((100 * (g1 - g0)) / Math.max(end - t0, 1e-9), 1),
    server_rss_mb: round(rssBytes(args.pid) / 2 ** 20, 1),
    window: [t0, end],
  };
  closeAll(again.filter(Boolean));
  sender.abort();
  return result;
}

// -- churn ----------------------------------------------------------------------------

async function churn(args) {
  const counter = new OpenLoop(null);
  const clients = await connectMany(counter, args.port, args.n, () => "churn");
  await settle(clients);
  const sender = clients[0];
  const doomed = clients.slice(args.n - args.die);
  const survivors = clients.slice(0, args.n - args.die);
  const payload = messagePayload("x".repeat(args.body));
  const g0 = ownCpu();
  const t0 = now();
  const interval = 1 / args.rate;
  let k = 0;
  let killed = false;
  while (now() - t0 < args.duration) {
    if (!killed && now() - t0 >= args["pause-at"]) {
      doomed.forEach((c, j) => (j % 2 ? c.close(1001) : c.abort()));
      killed = true;
    }
    counter.sentAt.push(now());
    sender.send(payload);
    k += 1;
    await sleep(t0 + k * interval - now());
  }
  const g1 = ownCpu();
  const elapsed = now() - t0;
  const sent = counter.sentAt.length;
  const deadline = now() + 10;
  while (now() < deadline && survivors.some((c) => c.seen < sent && !c.isLost)) {
    await sleep(0.1);
  }
  const result = {
    n: args.n,
    died: args.die,
    sent,
    survivors_closed: closedEarly(survivors),
    sender_closed: sender.isLost,
    lost: survivors.reduce((s, c) => s + (sent - c.seen), 0),
    loadgen_cpu_pct: round((100 * (g1 - g0)) / elapsed, 1),
  };
  closeAll(survivors);
  return result;
}

// -- refusal flood --------------------------------------------------------------------

/** An upgrade request whose token the server refuses (`kind`: how it is bad). */
function junkRequest(port, n, kind) {
  let tok;
  if (kind === "jwt") {
    // Well formed, signed with another key: the server checks the signature.
    const good = makeToken(`u${n}`);
    tok = good.slice(0, good.lastIndexOf(".") + 1) + "A".repeat(43);
  } else {
    tok = `junk-${n}`;
  }
  return Buffer.from(
    [
      `GET /ws/chat/calm?token=${tok} HTTP/1.1`,
      `Host: ${HOST}:${port}`,
      "Upgrade: websocket",
      "Connection: Upgrade",
      `Sec-WebSocket-Key: ${WS_KEY}`,
      "Sec-WebSocket-Version: 13",
    ].join("\r\n") + "\r\n\r\n",
  );
}

/** One junk handshake on a bare TCP socket: done when the server refused it (403, or
 * 101 then a close frame) or gave up on it. Answers a close frame the way a client
 * library would (a masked close frame with a zero key). */
function junk(port, request, done) {
  const started = now();
  let buf = Buffer.alloc(0);
  let outcome = null;
  const finish = (o) => {
    outcome = o;
    done(o, started);
  };
  const socket = net.connect(port, HOST, () => socket.write(request));
  socket.on("data", (data) => {
    if (outcome !== null) return;
    buf = Buffer.concat([buf, data]);
    const end = buf.indexOf("\r\n\r\n");
    if (end < 0) return;
    if (!buf.subarray(0, 12).equals(Buffer.from("HTTP/1.1 101"))) {
      finish("denied");
      socket.end();
      return;
    }
    const rest = buf.subarray(end + 4);
    if (rest.length >= 4 && rest[0] === 0x88) {
      const code = rest.readUInt16BE(2);
      socket.end(Buffer.from([0x88, 0x82, 0, 0, 0, 0, rest[2], rest[3]]));
      finish(`closed-${code}`);
    }
  });
  socket.on("error", (err) => {
    if (outcome === null && err.code === "ECONNREFUSED") finish("connect-failed");
  });
  socket.on("close", () => {
    if (outcome === null) finish("lost");
  });
}

async function flood(args) {
  const counter = new OpenLoop(null);
  const clients = await connectMany(counter, args.port, args.n, () => "calm");
  await settle(clients);
  const sender = clients[0];
  const payload = messagePayload("x".repeat(args.body));
  const outcomes = {};
  const refusalTimes = [];
  let inFlight = 0;
  let flooding = false;
  let skipped = 0;
  let serial = 0;
  const requests = Array.from({ length: 256 }, (_, i) => junkRequest(args.port, i, args.junk));
  const floodRate = args["flood-rate"];
  const concurrency = args["flood-concurrency"];

  function finished(outcome, started) {
    inFlight -= 1;
    if (flooding) {
      outcomes[outcome] = (outcomes[outcome] || 0) + 1;
      if (outcome !== "lost") refusalTimes.push(now() - started);
    }
    if (flooding && floodRate <= 0) launch();
  }

  function launch() {
    inFlight += 1;
    serial += 1;
    junk(args.port, requests[serial % requests.length], finished);
  }

  async function sendFor(seconds) {
    const t0 = now();
    const interval = 1 / args.rate;
    let k = 0;
    const floodInterval = floodRate > 0 ? 1 / floodRate : 0;
    let nextJunk = t0;
    const tick = Math.min(interval, 0.005);
    while (now() - t0 < seconds) {
      const t = now();
      while (t0 + k * interval <= t) {
        counter.sentAt.push(now());
        sender.send(payload);
        k += 1;
      }
      if (flooding && floodInterval) {
        while (nextJunk <= t) {
          if (inFlight < concurrency) launch();
          else skipped += 1;
          nextJunk += floodInterval;
        }
      }
      await sleep(tick);
    }
    return [t0, now()];
  }

  const [b0, b1] = await sendFor(args.duration);
  flooding = true;
  if (floodRate <= 0) for (let i = 0; i < concurrency; i++) launch();
  const [c0, g0] = [cpuSeconds(args.pid), ownCpu()];
  const [f0, f1] = await sendFor(args.duration);
  const [c1, g1] = [cpuSeconds(args.pid), ownCpu()];
  flooding = false;
  const refused = Object.entries(outcomes)
    .filter(([k]) => k !== "lost" && k !== "connect-failed")
    .reduce((s, [, v]) => s + v, 0);
  // Let the last messages arrive before reading latencies.
  await sleep(0.5);

  function p(a, b, q) {
    const lats = [];
    for (let i = 0; i < counter.arrivals.length; i++) {
      const lat = counter.latencies[i];
      const sentAt = counter.arrivals[i] - lat;
      if (a <= sentAt && sentAt < b) lats.push(lat);
    }
    return pct(lats, q);
  }

  const sent = counter.sentAt.length;
  const expected = sent * args.n;
  const result = {
    n: args.n,
    junk: args.junk,
    flood_rate_offered: floodRate,
    refusals_per_s: round(refused / (f1 - f0), 1),
    refusal_outcomes: outcomes,
    flood_skipped_at_cap: skipped,
    refusal_p50_ms: ms(pct(refusalTimes, 0.5)),
    refusal_p99_ms: ms(pct(refusalTimes, 0.99)),
    p50_before_ms: ms(p(b0, b1, 0.5)),
    p99_before_ms: ms(p(b0, b1, 0.99)),
    p50_during_ms: ms(p(f0, f1, 0.5)),
    p99_during_ms: ms(p(f0, f1, 0.99)),
    server_cpu_pct_during: round((100 * (c1 - c0)) / (f1 - f0), 1),
    server_us_per_refusal: round((1e6 * (c1 - c0)) / Math.max(refused, 1), 1),
    loadgen_cpu_pct_during: round((100 * (g1 - g0)) / (f1 - f0), 1),
    undelivered: expected - clients.reduce((s, c) => s + c.seen, 0),
    clients_closed: closedEarly(clients),
  };
  closeAll(clients);
  return result;
}

// -- main -----------------------------------------------------------------------------

const WORKLOADS = { w1, w2, w3, w4, w5, storm, reconnect, churn, flood };

/** Which native helpers `ws` loaded (bufferutil masks, utf-8-validate checks). */
function nativeHelpers() {
  const found = [];
  const off = { bufferutil: "WS_NO_BUFFER_UTIL", "utf-8-validate": "WS_NO_UTF_8_VALIDATE" };
  for (const name of ["bufferutil", "utf-8-validate"]) {
    if (process.env[off[name]]) continue; // ws does not load it either
    try {
      require(name);
      found.push(name);
    } catch {
      // ws falls back to JavaScript
    }
  }
  return found;
}

const OPTIONS = {
  port: { type: "string" },
  pid: { type: "string" },
  n: { type: "string", default: "100" },
  window: { type: "string", default: "32" },
  body: { type: "string", default: "64" },
  duration: { type: "string", default: "5" },
  warmup: { type: "string", default: "1" },
  rate: { type: "string", default: "50" },
  "pause-at": { type: "string", default: "2" },
  rooms: { type: "string", default: "500" },
  size: { type: "string", default: "4" },
  die: { type: "string", default: "10" },
  timeout: { type: "string", default: "60" },
  quiet: { type: "string", default: "0.5" },
  parallel: { type: "string", default: "1000" },
  backlog: { type: "string", default: "50" },
  since: { type: "string", default: "1" },
  "settle-limit": { type: "string", default: "20" },
  "flood-rate": { type: "string", default: "1000" },
  "flood-concurrency": { type: "string", default: "200" },
  junk: { type: "string", default: "malformed" },
  "rcvbuf-fd": { type: "string" },
  client: { type: "string", default: "lean" },
  "coalesce-us": { type: "string", default: "-1" },
  batch: { type: "boolean", default: false },
  deflate: { type: "boolean", default: false },
};

async function main() {
  const { values, positionals } = parseArgs({ options: OPTIONS, allowPositionals: true });
  const workload = positionals[0];
  if (positionals.length !== 1 || !(workload in WORKLOADS)) {
    const names = Object.keys(WORKLOADS).join(", ");
    process.stderr.write(`usage: loadgen.mjs WORKLOAD --port P --pid PID [...]; WORKLOAD: ${names}\n`);
    process.exit(2);
  }
  if (values.port === undefined || values.pid === undefined) {
    process.stderr.write("--port and --pid are required\n");
    process.exit(2);
  }
  if (!["lean", "ws"].includes(values.client)) {
    process.stderr.write("--client: lean or ws\n");
    process.exit(2);
  }
  CLIENT = values.client;
  if (!["malformed", "jwt"].includes(values.junk)) {
    process.stderr.write("--junk: malformed or jwt\n");
    process.exit(2);
  }
  const args = { ...values };
  for (const [key, spec] of Object.entries(OPTIONS)) {
    if (spec.type === "string" && !["junk", "client"].includes(key) && args[key] !== undefined) {
      const v = Number(args[key]);
      if (!Number.isFinite(v)) {
        process.stderr.write(`--${key}: a number, not ${JSON.stringify(args[key])}\n`);
        process.exit(2);
      }
      args[key] = v;
    }
  }
  if (args["coalesce-us"] < 0) args["coalesce-us"] = autoCoalesce(workload, args);
  const result = await WORKLOADS[workload](args);
  if (workload === "w1" || workload === "w3") {
    result.loadgen_coalesce_us = args["coalesce-us"];
  }
  const native = nativeHelpers();
  const ws = CLIENT === "ws" || args.deflate;
  result.loadgen = "node";
  result.loadgen_client = ws ? "ws" : "lean";
  result.loadgen_loop = ws
    ? `node ${process.versions.node}, ws ${require("ws/package.json").version}${
        native.length ? ` + ${native.join(", ")}` : ""
      }`
    : `node ${process.versions.node}, lean client`;
  process.stdout.write(`${JSON.stringify(result)}\n`);
  // Sockets the server has not finished closing must not keep the process alive.
  process.exit(0);
}

main().catch((err) => {
  process.stderr.write(`${err.stack || err}\n`);
  process.exit(1);
});
