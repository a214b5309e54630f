// wschat-client: a WebSocket client for wschat that does the right thing after every
// close. Zero dependencies; runs in browsers and in Node 20+ (pass `WebSocket` from the
// `ws` package where there is no global one).
//
// After each close it looks the code and reason up in wschat's close-code policy (the
// data file src/wschat/schema/close-codes.json, copied in at build time): retry after a
// backoff with full jitter, ask the token provider once and reconnect at once (4401), or
// stop with a ChatStopped error that says what to do. A reconnect resumes with
// ?since=<offset>&epoch=<epoch>; messages sent while disconnected wait in a bounded
// queue. close() closes the socket with 1000 "bye" and clears every timer.
import CLOSE_CODES from "./generated/close-codes.js";

/** The close code reported when no close frame came (network, a dead server). */
export const ABNORMAL = 1006;
/** Messages send() queues while disconnected, at most. */
export const DEFAULT_MAX_QUEUE = 100;
/** Milliseconds a handshake may take before the attempt counts as a 1006. */
export const DEFAULT_OPEN_TIMEOUT_MS = 10_000;
/** The close-code policy data (close-codes.json). */
export const CLOSE_POLICY = CLOSE_CODES;

const SUBPROTOCOL = "wschat.v1";
const TOKEN_PREFIX = "bearer.";
const TCHAR = /^[A-Za-z0-9!#$%&'*+\-.^_`|~]*$/;
// Error codes that answer a history or members request (an error frame names no
// request: one request at a time is in flight, so the code says which it answers).
const HISTORY_ERRORS = new Set(["unknown_type", "bad_frame", "history_unavailable"]);
const MEMBERS_ERRORS = new Set(["unknown_type", "bad_frame", "bad_cursor"]);
const MAX_MEMBERS_PAGE = 1000;
const RETRY = Symbol("retry");

/**
 * The policy for a close: the entry for (code, reason code), else the code's first
 * entry, else "stop".
 */
export function policyFor(code, reason = "") {
  const reasonCode = String(reason).split(":", 1)[0].trim();
  const entries = CLOSE_CODES.codes.filter((e) => e.code === code);
  const entry = entries.find((e) => e.reason === reasonCode) ?? entries[0];
  if (!entry) {
    const should = CLOSE_CODES.unknown.client_should;
    return { code, reason: reasonCode, action: "stop", fix: should, clientShould: should, backoffMs: null, maxAttempts: null };
  }
  return {
    code,
    reason: reasonCode,
    action: entry.action,
    fix: entry.fix,
    clientShould: entry.client_should,
    backoffMs: entry.backoff_ms ?? null,
    maxAttempts: entry.max_attempts ?? null,
  };
}

/** The largest delay in ms before reconnect attempt `attempt` (0 first). */
export function backoffCeiling(policy, attempt) {
  const { base, cap } = policy.backoffMs ?? { base: 0, cap: 0 };
  return Math.min(cap, base * 2 ** Math.min(attempt, 32));
}

/** A delay in ms with full jitter: uniform in [0, backoffCeiling(policy, attempt)]. */
export function backoffDelay(policy, attempt, random = Math.random) {
  return random() * backoffCeiling(policy, attempt);
}

/** The root of the client's errors. */
export class ChatError extends Error {
  constructor(message) {
    super(message);
    this.name = "ChatError";
  }
}

/** The client stopped for good: the server refused it, or it gave up. */
export class ChatStopped extends ChatError {
  constructor(code, reason, fix, detail = "") {
    super(`${reason ? `${code} ${reason}` : code}${detail}; fix: ${fix}`);
    this.name = "ChatStopped";
    this.code = code;
    this.reason = reason;
    this.fix = fix;
  }
}

/** send() found the queue of messages waiting for a reconnect full. */
export class SendQueueFull extends ChatError {
  constructor(message) {
    super(message);
    this.name = "SendQueueFull";
  }
}

/** The server answered a history request with an error frame. */
export class HistoryError extends ChatError {
  constructor(code, message) {
    super(`history request refused: ${code}: ${message}`);
    this.name = "HistoryError";
    this.code = code;
    this.serverMessage = message;
  }
}

/** The server answered a members request with an error frame. */
export class MembersError extends ChatError {
  constructor(code, message) {
    super(`members request refused: ${code}: ${message}`);
    this.name = "MembersError";
    this.code = code;
    this.serverMessage = message;
  }
}

function checkCount(name, value, minimum) {
  if (!Number.isInteger(value) || value < minimum) {
    throw new RangeError(`${name} must be an integer of at least ${minimum}: ${value}`);
  }
}

/** Open a chat connection; see Chat. */
export function connect(url, options = {}) {
  return new Chat(url, options);
}

/** One chat connection that reconnects by itself. */
export class Chat {
  #url;
  #token;
  #provider;
  #WebSocket;
  #maxQueue;
  #maxAttempts;
  #random;
  #clock;
  #scale;
  #openTimeout;
  #listeners = new Map();
  #ws = null;
  #outbox = [];
  #epoch = null;
  #offset = null;
  #maxMessageBytes = null;
  #readies = 0;
  #closing = false;
  #timers = new Set();
  #wake = null;
  #readyWaiters = [];
  #waiter = null;
  #requestChain = Promise.resolve(); // history() and membersPage() take turns
  #requestIds = 0;
  #closed = null;
  #members = new Set();

  /** "connecting" | "open" | "reconnecting" | "stopped" | "closed" */
  state = "connecting";
  /** The ChatStopped (or other error) the client stopped with, else null. */
  error = null;
  /** Users in the room as this client knows them (ready.members plus presence). */
  memberCount = 0;

  constructor(url, options = {}) {
    const parsed = new URL(url);
    if (parsed.protocol !== "ws:" && parsed.protocol !== "wss:") {
      throw new TypeError(`url must start with ws:// or wss://, got ${url}`);
    }
    if (parsed.searchParams.has("token")) {
      throw new TypeError(
        "url carries a token: pass it as the token option (it then travels in the handshake's subprotocol, not in a URL that servers log)",
      );
    }
    const { token = null, tokenProvider = null } = options;
    if (token == null && tokenProvider == null) throw new TypeError("give token or tokenProvider (or both)");
    if (tokenProvider != null && typeof tokenProvider !== "function") throw new TypeError("tokenProvider must be a function");
    const WS = options.WebSocket ?? globalThis.WebSocket;
    if (typeof WS !== "function") {
      throw new TypeError(
        "no WebSocket here (Node before 22): pass one, e.g. connect(url, { WebSocket: (await import('ws')).WebSocket, ... })",
      );
    }
    const maxQueue = options.maxQueue ?? DEFAULT_MAX_QUEUE;
    checkCount("maxQueue", maxQueue, 0);
    if (options.maxAttempts != null) checkCount("maxAttempts", options.maxAttempts, 0);
    const scale = options.backoffScale ?? 1;
    if (!(scale >= 0)) throw new RangeError(`backoffScale must be at least 0, got ${scale}`);
    this.#url = parsed.toString();
    this.#token = token;
    this.#provider = tokenProvider;
    this.#WebSocket = WS;
    this.#maxQueue = maxQueue;
    this.#maxAttempts = options.maxAttempts ?? null;
    this.#random = options.random ?? Math.random;
    this.#clock = options.clock ?? globalThis;
    this.#scale = scale;
    this.#openTimeout = options.openTimeoutMs ?? DEFAULT_OPEN_TIMEOUT_MS;
    this.#run();
  }

  /** Messages waiting for a reconnect. */
  get queued() {
    return this.#outbox.length;
  }

  /** The last message offset seen and its epoch: where a reconnect resumes. */
  get position() {
    return { epoch: this.#epoch, offset: this.#offset };
  }

  /** Users in the room, sorted (empty in a room over the server's presence threshold). */
  get members() {
    return [...this.#members].sort();
  }

  /** Listen to events of `type` ("*" for all); returns a function that stops listening. */
  on(type, listener) {
    let set = this.#listeners.get(type);
    if (!set) this.#listeners.set(type, (set = new Set()));
    set.add(listener);
    return () => set.delete(listener);
  }

  /** The current connection's ready frame, once there is one; rejects when the chat stops or closes. */
  whenReady() {
    if (this.state === "open" && this.#lastReady) return Promise.resolve(this.#lastReady);
    const failed = this.#unusable();
    if (failed) return Promise.reject(failed);
    return new Promise((resolve, reject) => this.#readyWaiters.push({ resolve, reject }));
  }

  #lastReady = null;

  /** Send a chat message; while disconnected, queue it for the reconnect. */
  send(body, { clientId } = {}) {
    const failed = this.#unusable();
    if (failed) throw failed;
    if (body === undefined) throw new TypeError("body must be JSON (got undefined)");
    const frame = { type: "message", body };
    if (clientId != null) frame.client_id = String(clientId);
    const text = JSON.stringify(frame);
    const limit = this.#maxMessageBytes;
    if (limit != null) {
      const size = new TextEncoder().encode(text).length;
      if (size > limit) {
        throw new RangeError(
          `message frame of ${size} bytes is over the server's max_message_bytes (${limit}); send a smaller body`,
        );
      }
    }
    const ws = this.#ws;
    if (this.state === "open" && ws && ws.readyState === 1 && this.#outbox.length === 0) {
      ws.send(text);
      return;
    }
    if (this.#outbox.length >= this.#maxQueue) {
      throw new SendQueueFull(
        `${this.#outbox.length} messages already wait for the reconnect (maxQueue=${this.#maxQueue}); wait for a "reconnected" event, or connect with a larger maxQueue`,
      );
    }
    this.#outbox.push(text);
  }

  /** A page of the room's history: up to `limit` messages before offset `before`. */
  history({ before, limit = 50 } = {}) {
    if (before != null) checkCount("before", before, 1);
    checkCount("limit", limit, 1);
    const frame = { type: "history", limit };
    if (before != null) frame.before = before;
    return this.#request(JSON.stringify(frame), { type: "history", errors: HISTORY_ERRORS, Refused: HistoryError });
  }

  /**
   * A page of the room's member list, in order of user id: pass each page's `cursor`
   * back until it is null. Waits while reconnecting; asks again after a drop.
   */
  membersPage({ cursor, limit = 100 } = {}) {
    checkCount("limit", limit, 1);
    if (limit > MAX_MEMBERS_PAGE) throw new RangeError(`limit must be at most ${MAX_MEMBERS_PAGE}: ${limit}`);
    if (cursor != null && typeof cursor !== "string") throw new TypeError("cursor must be a page's cursor (a string)");
    const id = ++this.#requestIds;
    const frame = { type: "members", limit, id };
    if (cursor != null) frame.cursor = cursor;
    return this.#request(JSON.stringify(frame), { type: "members", id, errors: MEMBERS_ERRORS, Refused: MembersError });
  }

  #request(text, kind) {
    const run = async () => {
      for (;;) {
        await this.whenReady();
        const ws = this.#ws;
        let answer;
        try {
          answer = await new Promise((resolve, reject) => {
            this.#waiter = { ...kind, resolve, reject };
            try {
              ws.send(text);
            } catch {
              resolve(RETRY);
            }
          });
        } finally {
          // A refusal too: a settled waiter left behind would swallow later frames.
          this.#waiter = null;
        }
        if (answer !== RETRY) return answer;
      }
    };
    const result = this.#requestChain.then(run, run);
    this.#requestChain = result.catch(() => {});
    return result;
  }

  /** Send a fresh token in-band; reconnects use it too. */
  refresh(token) {
    const failed = this.#unusable();
    if (failed) throw failed;
    if (typeof token !== "string" || !token) throw new TypeError("refresh needs a token");
    this.#token = token;
    const ws = this.#ws;
    if (this.state === "open" && ws && ws.readyState === 1) ws.send(JSON.stringify({ type: "auth", token }));
  }

  /**
   * Close the socket with 1000 "bye", clear every timer and stop reconnecting. Safe to
   * call any time, more than once. Resolves once the socket has closed.
   */
  close() {
    if (this.#closed) return this.#closed;
    this.#closing = true;
    const ws = this.#ws;
    this.#clearTimers();
    if (this.state !== "stopped") this.#setState("closed");
    const error = new ChatError("the chat is closed");
    this.#failWaiters(error);
    this.#closed = new Promise((resolve) => {
      if (!ws || ws.readyState === 3) {
        resolve();
        return;
      }
      ws.addEventListener("close", () => resolve());
      try {
        ws.close(1000, "bye");
      } catch {
        resolve();
      }
    });
    return this.#closed;
  }

  // -- internals -----------------------------------------------------------------

  #unusable() {
    if (this.error) return this.error;
    if (this.#closing || this.state === "closed") return new ChatError("the chat is closed");
    return null;
  }

  #emit(event) {
    for (const key of [event.type, "*"]) {
      const set = this.#listeners.get(key);
      if (!set) continue;
      for (const listener of [...set]) {
        try {
          listener(event);
        } catch (err) {
          queueMicrotask(() => {
            throw err;
          });
        }
      }
    }
  }

  #setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.#emit({ type: "state", state });
  }

  #setTimer(fn, ms) {
    const handle = this.#clock.setTimeout(() => {
      this.#timers.delete(handle);
      fn();
    }, ms);
    this.#timers.add(handle);
    return handle;
  }

  #clearTimer(handle) {
    if (this.#timers.delete(handle)) this.#clock.clearTimeout(handle);
  }

  #clearTimers() {
    for (const handle of this.#timers) this.#clock.clearTimeout(handle);
    this.#timers.clear();
    const wake = this.#wake;
    this.#wake = null;
    if (wake) wake();
  }

  #sleep(ms) {
    return new Promise((resolve) => {
      this.#wake = resolve;
      this.#setTimer(() => {
        this.#wake = null;
        resolve();
      }, ms);
    });
  }

  #failWaiters(error) {
    const waiters = this.#readyWaiters;
    this.#readyWaiters = [];
    for (const w of waiters) w.reject(error);
    if (this.#waiter) this.#waiter.reject(error);
    this.#waiter = null;
  }

  async #run() {
    await null; // let the caller attach listeners first
    let attempt = 0;
    let refreshed = false;
    try {
      while (!this.#closing) {
        if (this.#token == null) await this.#askToken(4401, "token_missing");
        if (this.#closing) return;
        const { code, reason, reached } = await this.#connectOnce();
        if (this.#closing) return;
        if (reached) {
          attempt = 0;
          refreshed = false;
        }
        const policy = policyFor(code, reason);
        if (policy.action === "refresh_token") {
          if (this.#provider == null || refreshed) {
            throw new ChatStopped(code, reason, policy.fix, refreshed ? " (after a fresh token)" : "");
          }
          refreshed = true;
          this.#setState("reconnecting");
          this.#emit({ type: "disconnected", code, reason, fix: policy.fix, delay: 0, attempt });
          await this.#askToken(code, reason, policy.fix);
          continue;
        }
        if (policy.action === "stop") {
          if (code === 1000) {
            this.#setState("closed");
            this.#emit({ type: "closed", code, reason });
            this.#failWaiters(new ChatError(`the server ended the session (1000 ${reason})`));
            return;
          }
          throw new ChatStopped(code, reason, policy.fix);
        }
        const limits = [policy.maxAttempts, this.#maxAttempts].filter((n) => n != null);
        if (limits.length && attempt >= Math.min(...limits)) {
          throw new ChatStopped(code, reason, policy.fix, ` (gave up after ${attempt} tries)`);
        }
        const delay = backoffDelay(policy, attempt, this.#random) * this.#scale;
        this.#setState("reconnecting");
        this.#emit({ type: "disconnected", code, reason, fix: policy.fix, delay, attempt });
        attempt += 1;
        await this.#sleep(delay);
      }
    } catch (err) {
      if (this.#closing) return;
      this.error = err;
      this.#clearTimers();
      this.#setState("stopped");
      this.#failWaiters(err);
      this.#emit({ type: "stopped", error: err });
    }
  }

  async #askToken(code, reason, fix) {
    fix = fix ?? policyFor(code, reason).fix;
    if (this.#provider == null) throw new ChatStopped(code, reason, fix);
    let token;
    try {
      token = await this.#provider();
    } catch (err) {
      const stopped = new ChatStopped(code, reason, fix, ` (the token provider failed: ${err?.message ?? err})`);
      stopped.cause = err;
      throw stopped;
    }
    if (typeof token !== "string" || !token) {
      throw new ChatStopped(code, reason, fix, " (the token provider returned no token)");
    }
    this.#token = token;
  }

  #resumeUrl() {
    if (this.#epoch == null || this.#offset == null) return this.#url;
    const url = new URL(this.#url);
    url.searchParams.set("since", String(this.#offset));
    url.searchParams.set("epoch", this.#epoch);
    return url.toString();
  }

  #connectOnce() {
    const token = this.#token ?? "";
    if (!TCHAR.test(token)) {
      // It cannot travel in a subprotocol; the server would say the same.
      return Promise.resolve({ code: 4401, reason: "token_malformed: the token has characters a JWT has not", reached: false });
    }
    return new Promise((resolve) => {
      let ws;
      try {
        ws = new this.#WebSocket(this.#resumeUrl(), [SUBPROTOCOL, TOKEN_PREFIX + token]);
      } catch (err) {
        resolve({ code: ABNORMAL, reason: "", reached: false });
        return;
      }
      const readies = this.#readies;
      this.#ws = ws;
      const timer = this.#setTimer(() => {
        if (ws.readyState === 0) ws.close();
      }, this.#openTimeout);
      ws.onopen = () => this.#clearTimer(timer);
      ws.onerror = () => {}; // a close event follows
      ws.onmessage = (event) => {
        if (typeof event.data === "string") this.#onText(event.data, ws);
      };
      ws.onclose = (event) => {
        this.#clearTimer(timer);
        if (this.#ws === ws) this.#ws = null;
        if (this.#waiter) this.#waiter.resolve(RETRY); // the request is sent again
        if (this.state === "open") this.#setState("reconnecting");
        resolve({ code: event.code || ABNORMAL, reason: event.reason || "", reached: this.#readies > readies });
      };
    });
  }

  #onText(text, ws) {
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      return;
    }
    if (!frame || typeof frame !== "object" || typeof frame.type !== "string") return;
    if (frame.type === "batch" && Array.isArray(frame.frames)) {
      for (const inner of frame.frames) {
        if (inner && typeof inner === "object" && typeof inner.type === "string") this.#onFrame(inner, ws);
      }
      return;
    }
    this.#onFrame(frame, ws);
  }

  #onFrame(frame, ws) {
    if (this.#closing || this.#ws !== ws) return;
    switch (frame.type) {
      case "ready":
        this.#onReady(frame, ws);
        return;
      case "message":
        if (Number.isInteger(frame.offset) && frame.offset > (this.#offset ?? 0)) this.#offset = frame.offset;
        break;
      case "presence":
        this.#onPresence(frame);
        break;
      case "token_expiring":
        if (this.#provider != null) this.#refreshInBand(ws);
        break;
      case "history":
      case "members":
        if (this.#waiter?.type === frame.type && (this.#waiter.id == null || this.#waiter.id === frame.id)) {
          this.#waiter.resolve(frame);
          return;
        }
        break;
      case "error":
        if (this.#waiter?.errors.has(frame.code)) {
          this.#waiter.reject(new this.#waiter.Refused(frame.code, frame.message));
          return;
        }
        break;
    }
    this.#emit(frame);
  }

  #onReady(ready, ws) {
    const recovered = ready.recovered === true;
    if (!recovered) {
      // Start from the room's present; what came before is history().
      this.#epoch = typeof ready.epoch === "string" ? ready.epoch : null;
      this.#offset = Number.isInteger(ready.offset) ? ready.offset : null;
    }
    const limit = ready.limits?.max_message_bytes;
    this.#maxMessageBytes = Number.isInteger(limit) ? limit : null;
    this.#members = new Set(Array.isArray(ready.members) ? ready.members : []);
    this.memberCount = Number.isInteger(ready.count) ? ready.count : this.#members.size;
    this.#readies += 1;
    this.#lastReady = ready;
    this.#setState("open");
    while (this.#outbox.length && ws.readyState === 1) ws.send(this.#outbox.shift());
    this.#emit(ready);
    if (this.#readies > 1) this.#emit({ type: "reconnected", recovered, ready });
    const waiters = this.#readyWaiters;
    this.#readyWaiters = [];
    for (const w of waiters) w.resolve(ready);
  }

  #onPresence(frame) {
    if (frame.event === "join" && frame.user != null) this.#members.add(frame.user);
    if (frame.event === "leave" && frame.user != null) this.#members.delete(frame.user);
    for (const user of frame.joins ?? []) this.#members.add(user);
    for (const user of frame.leaves ?? []) this.#members.delete(user);
    if (Number.isInteger(frame.count)) this.memberCount = frame.count;
  }

  async #refreshInBand(ws) {
    try {
      await this.#askToken(4401, "token_expired");
    } catch (err) {
      // The server closes at exp; the reconnect asks the provider again.
      this.#emit({ type: "refresh_failed", error: err });
      return;
    }
    if (this.#ws === ws && ws.readyState === 1) ws.send(JSON.stringify({ type: "auth", token: this.#token }));
  }
}
