// Start and stop the real wschat server of test/server.py for the tests.
import { spawn } from "node:child_process";
import { connect as tcpConnect, createServer } from "node:net";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { randomBytes } from "node:crypto";

const here = dirname(fileURLToPath(import.meta.url));
const repo = join(here, "..", "..", "..");
/** The Python that runs wschat: WSCHAT_PYTHON, else python3. */
const PYTHON = process.env.WSCHAT_PYTHON ?? "python3";

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** The shared Redis the Redis-backed server uses (test/server.py's WSCHAT_TEST_REDIS). */
export const REDIS_URL = "redis://127.0.0.1:6379/0";

/** Whether the shared Redis answers PING. */
export function redisAnswers() {
  return new Promise((resolve) => {
    const sock = tcpConnect(6379, "127.0.0.1");
    const done = (answer) => {
      sock.destroy();
      resolve(answer);
    };
    sock.setTimeout(500, () => done(false));
    sock.on("connect", () => sock.write("PING\r\n"));
    sock.on("data", (d) => done(d.toString().startsWith("+PONG")));
    sock.on("error", () => done(false));
  });
}

/** Environment for a server whose rooms live in the shared Redis under a prefix of its own. */
export function onRedis() {
  return { WSCHAT_TEST_REDIS: REDIS_URL, WSCHAT_TEST_PREFIX: `wstjs${randomBytes(4).toString("hex")}:` };
}

export class Server {
  /** `env`: extra environment for test/server.py (`onRedis()` for a Redis-backed one). */
  constructor(port, secret = randomBytes(32).toString("hex"), env = {}) {
    this.port = port;
    this.secret = secret;
    this.env = env;
    this.proc = null;
    this.output = "";
  }

  static async start() {
    const server = new Server(await freePort());
    await server.start();
    return server;
  }

  get http() {
    return `http://127.0.0.1:${this.port}`;
  }

  url(room = "lobby") {
    return `ws://127.0.0.1:${this.port}/ws/chat/${room}`;
  }

  async start() {
    const env = {
      ...process.env,
      ...this.env,
      PYTHONPATH: [join(repo, "src"), process.env.PYTHONPATH].filter(Boolean).join(":"),
    };
    this.proc = spawn(PYTHON, [join(here, "server.py"), String(this.port), this.secret], { env, stdio: ["ignore", "pipe", "pipe"] });
    this.proc.stdout.on("data", (d) => (this.output += d));
    this.proc.stderr.on("data", (d) => (this.output += d));
    const exited = new Promise((resolve) => this.proc.once("exit", resolve));
    const deadline = Date.now() + 20_000;
    while (Date.now() < deadline) {
      try {
        const res = await fetch(`${this.http}/test/handshakes`);
        if (res.ok) return;
      } catch {}
      const code = await Promise.race([exited, sleep(100).then(() => undefined)]);
      if (code !== undefined) throw new Error(`the server exited (${code}):\n${this.output}`);
    }
    throw new Error(`the server did not start in 20 s:\n${this.output}`);
  }

  /** Stop the server; throw if it sent a frame the wire's schema refuses. */
  async stop() {
    const proc = this.proc;
    if (!proc || proc.exitCode !== null) return;
    const frames = await this.frames().catch((err) => ({ error: err }));
    const done = new Promise((resolve) => proc.once("exit", resolve));
    proc.kill("SIGINT");
    const timer = setTimeout(() => proc.kill("SIGKILL"), 5000);
    await done;
    clearTimeout(timer);
    this.proc = null;
    if (frames.error) throw new Error(`GET /test/frames failed: ${frames.error}`);
    if (frames.violations.length > 0) {
      throw new Error(`the server sent frames protocol.schema.json refuses:\n${frames.violations.join("\n")}`);
    }
    if (!frames.validating && process.env.CI) {
      throw new Error("the test server cannot validate frames: install jsonschema (pip install -e '.[dev]')");
    }
  }

  /** What GET /test/frames says: `{ validating, checked, violations }`. */
  async frames() {
    return (await fetch(`${this.http}/test/frames`)).json();
  }

  async handshakes() {
    return (await (await fetch(`${this.http}/test/handshakes`)).json()).handshakes;
  }

  async token(sub = "alice", ttl = 3600) {
    return (await fetch(`${this.http}/test/token?sub=${sub}&ttl=${ttl}`)).text();
  }

  /** End every session of `user` with the server error whose reason code is `error`. */
  async closeUser(user, error) {
    const res = await fetch(`${this.http}/test/close?user=${user}&error=${error}`, { method: "POST" });
    const { closed } = await res.json();
    if (closed < 1) throw new Error(`no session of ${user} to close`);
  }

  async restartSockets() {
    await fetch(`${this.http}/test/restart`, { method: "POST" });
  }
}

/** The next event of `type` from `chat`, or a failure after `ms`. */
export function next(chat, type, ms = 10_000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no ${type} event in ${ms} ms (state ${chat.state})`));
    }, ms);
    const off = chat.on(type, (event) => {
      clearTimeout(timer);
      off();
      resolve(event);
    });
  });
}

/** Wait until `check()` is true. */
export async function until(check, ms = 10_000, what = "the condition") {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await check()) return;
    await sleep(25);
  }
  throw new Error(`${what} did not hold within ${ms} ms`);
}

/** A `clock` for the client whose timers fire only when a test says so. */
export class FakeClock {
  timers = new Map();
  #next = 1;
  setTimeout(fn, ms) {
    const id = this.#next++;
    this.timers.set(id, { fn, ms });
    return id;
  }
  clearTimeout(id) {
    this.timers.delete(id);
  }
  /** Fire the pending timer of `ms` (the backoff), as if that much time passed. */
  fire(ms) {
    for (const [id, t] of this.timers) {
      if (t.ms === ms) {
        this.timers.delete(id);
        t.fn();
        return true;
      }
    }
    return false;
  }
  delays(openTimeout) {
    return [...this.timers.values()].map((t) => t.ms).filter((ms) => ms !== openTimeout);
  }
}
