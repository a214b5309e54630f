// The client against a real wschat server (test/server.py): round trip, stops,
// token refresh, resume after restarts, backoff on a fake clock, close() cleanup.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { WebSocket } from "ws";
import {
  ChatError, ChatStopped, MembersError, SendQueueFull, backoffCeiling, connect, policyFor, CLOSE_POLICY,
} from "../src/index.js";
import { FakeClock, Server, freePort, next, onRedis, redisAnswers, sleep, until } from "./server.mjs";

let server;
before(async () => {
  server = await Server.start();
});
after(async () => {
  await server?.stop();
});

/** Handshakes counted by the server since `start`, and none more within half a second. */
async function handshakesSince(start, count) {
  await until(async () => (await server.handshakes()) - start >= count, 5000, `${count} handshakes`);
  await sleep(500);
  assert.equal((await server.handshakes()) - start, count);
}

test("a chat round trip: ready, members, a message both ways", async () => {
  const start = await server.handshakes();
  const alice = connect(server.url("round"), { token: await server.token("alice"), WebSocket });
  const ready = await alice.whenReady();
  assert.equal(ready.user, "alice");
  assert.equal(alice.state, "open");
  const bob = connect(server.url("round"), { token: await server.token("bob"), WebSocket });
  await bob.whenReady();
  await until(() => alice.members.includes("bob"), 5000, "alice sees bob join");
  assert.deepEqual(alice.members, ["alice", "bob"]);
  const got = next(bob, "message");
  alice.send({ text: "hello" }, { clientId: "c1" });
  const message = await got;
  assert.deepEqual([message.user, message.body, message.client_id], ["alice", { text: "hello" }, "c1"]);
  assert.equal(await server.handshakes() - start, 2);
  const page = await bob.history({ limit: 10 });
  assert.deepEqual(page.messages.map((m) => m.body), [{ text: "hello" }]);
  await bob.close();
  await until(() => !alice.members.includes("bob"), 5000, "alice sees bob leave");
  await alice.close();
});

test("membersPage() pages the room: every member exactly once, in order of user id", async () => {
  const users = ["alice", "bob", "carol", "dave", "erin", "frank", "grace"];
  const chats = [];
  for (const user of users) {
    const chat = connect(server.url("paged"), { token: await server.token(user), WebSocket });
    await chat.whenReady();
    chats.push(chat);
  }
  const alice = chats[0];
  const pages = [];
  let cursor = null;
  do {
    const page = await alice.membersPage({ cursor, limit: 3 });
    pages.push(page);
    cursor = page.cursor;
  } while (cursor != null);
  assert.deepEqual(pages.map((p) => p.members.length), [3, 3, 1]);
  assert.deepEqual(pages.flatMap((p) => p.members), users);
  assert.deepEqual(new Set(pages.map((p) => `${p.type} ${p.chat_id} ${p.count}`)), new Set(["members paged 7"]));
  assert.deepEqual((await alice.membersPage()).members, users);
  assert.throws(() => alice.membersPage({ limit: 1001 }), /at most 1000/);
  for (const chat of chats) await chat.close();
});

test("a bad cursor rejects with the server's bad_cursor, and later errors are events again", async () => {
  const chat = connect(server.url("cursor"), { token: await server.token("alice"), WebSocket });
  await chat.whenReady();
  await assert.rejects(chat.membersPage({ cursor: "not a cursor!" }), (error) => {
    assert.ok(error instanceof MembersError);
    assert.equal(error.code, "bad_cursor");
    assert.match(error.message, /^members request refused: bad_cursor: /);
    return true;
  });
  // The refused request's waiter is gone: a bad_frame that answers no request
  // reaches the app as an error event.
  const error = next(chat, "error", 5000);
  chat.send("x", { clientId: "x".repeat(200) });
  assert.equal((await error).code, "bad_frame");
  assert.deepEqual((await chat.membersPage()).members, ["alice"]);
  await chat.close();
});

test("the token travels in the subprotocol, and a URL with a token is refused", async () => {
  assert.throws(() => connect(server.url() + "?token=x", { token: "x", WebSocket }), /url carries a token/);
  assert.throws(() => connect(server.url(), { WebSocket }), /give token or tokenProvider/);
  assert.throws(() => connect("http://x/ws/chat/a", { token: "x", WebSocket }), /ws:\/\/ or wss:\/\//);
});

test("4403 stops after one handshake, with the fix", async () => {
  const start = await server.handshakes();
  const chat = connect(server.url("private-room"), { token: await server.token(), WebSocket });
  const { error } = await next(chat, "stopped");
  assert.ok(error instanceof ChatStopped);
  assert.equal(error.code, 4403);
  assert.match(error.reason, /^forbidden/);
  assert.match(error.message, /fix: your authorize refused/);
  assert.equal(chat.state, "stopped");
  await assert.rejects(chat.whenReady(), ChatStopped);
  assert.throws(() => chat.send("x"), ChatStopped);
  await handshakesSince(start, 1);
  await chat.close();
});

test("a malformed token stops after one handshake", async () => {
  const start = await server.handshakes();
  const chat = connect(server.url(), { token: "test", WebSocket });
  const { error } = await next(chat, "stopped");
  assert.equal(error.code, 4401);
  assert.match(error.reason, /^token_malformed/);
  await handshakesSince(start, 1);
});

// The retried codes reconnect within their code's backoff ceiling; the stop codes stop
// after one handshake with the fix (4403 and the malformed token are above). The server
// ends the session with the error its own code path would raise (POST /test/close).
for (const [error, code] of [
  ["going_away", 1001],
  ["internal_error", 1011],
  ["slow_consumer", 1013],
  ["try_again_later", 1013],
  ["rate_limited", 4429],
]) {
  test(`${code} ${error} reconnects within its backoff`, async () => {
    const user = `retry-${error.replaceAll("_", "-")}`;
    const clock = new FakeClock();
    const start = await server.handshakes();
    const chat = connect(server.url("codes"), { token: await server.token(user), WebSocket, clock, random: () => 1, openTimeoutMs: 60_000 });
    await chat.whenReady();
    const gone = next(chat, "disconnected");
    await server.closeUser(user, error);
    const dropped = await gone;
    assert.equal(dropped.code, code);
    assert.match(dropped.reason, new RegExp(`^${error}`));
    assert.equal(dropped.attempt, 0);
    assert.equal(dropped.delay, backoffCeiling(policyFor(code, dropped.reason), 0)); // random() = 1
    assert.equal(chat.state, "reconnecting");
    const back = next(chat, "reconnected");
    assert.ok(clock.fire(dropped.delay), "the backoff timer waits");
    assert.equal((await back).ready.user, user);
    assert.equal((await server.handshakes()) - start, 2);
    await chat.close();
    assert.equal(clock.timers.size, 0);
  });
}

for (const [error, code] of [
  ["text_only", 1003],
  ["message_too_big", 1009],
  ["bad_request", 4400],
  ["too_many_connections", 4429],
]) {
  test(`${code} ${error} stops after one handshake, with the fix`, async () => {
    const user = `stop-${error.replaceAll("_", "-")}`;
    const clock = new FakeClock();
    const start = await server.handshakes();
    const chat = connect(server.url("codes"), { token: await server.token(user), WebSocket, clock });
    await chat.whenReady();
    const stopped = next(chat, "stopped");
    await server.closeUser(user, error);
    const { error: err } = await stopped;
    assert.ok(err instanceof ChatStopped);
    assert.equal(err.code, code);
    assert.match(err.reason, new RegExp(`^${error}`));
    assert.equal(err.fix, policyFor(code, err.reason).fix);
    assert.match(err.message, /; fix: /);
    assert.equal(chat.state, "stopped");
    assert.equal(clock.timers.size, 0, "no backoff timer");
    await handshakesSince(start, 1);
    await chat.close();
  });
}

test("an invalid chat id stops with 4400 after one handshake", async () => {
  const start = await server.handshakes();
  const chat = connect(server.url("-not-a-room"), { token: await server.token("alice"), WebSocket });
  const { error } = await next(chat, "stopped");
  assert.equal(error.code, 4400);
  assert.match(error.reason, /^invalid_chat_id/);
  assert.equal(error.fix, policyFor(4400, "invalid_chat_id").fix);
  await handshakesSince(start, 1);
  await chat.close();
});

test("4401 asks the provider once, then connects", async () => {
  const start = await server.handshakes();
  let asked = 0;
  const good = await server.token("carol");
  const chat = connect(server.url(), {
    token: "test",
    tokenProvider: async () => {
      asked += 1;
      return good;
    },
    WebSocket,
  });
  const ready = await chat.whenReady();
  assert.equal(ready.user, "carol");
  assert.equal(asked, 1);
  assert.equal(await server.handshakes() - start, 2);
  await chat.close();
});

test("a fresh token refused too stops after two handshakes", async () => {
  const start = await server.handshakes();
  let asked = 0;
  const chat = connect(server.url(), { token: "test", tokenProvider: () => (asked += 1, "still.not.ajwt"), WebSocket });
  const { error } = await next(chat, "stopped");
  assert.equal(error.code, 4401);
  assert.match(error.message, /after a fresh token/);
  assert.equal(asked, 1);
  await handshakesSince(start, 2);
});

test("a provider that throws stops with its error as the cause", async () => {
  const boom = new Error("login down");
  const chat = connect(server.url(), { token: "test", tokenProvider: () => { throw boom; }, WebSocket });
  const { error } = await next(chat, "stopped");
  assert.equal(error.code, 4401);
  assert.equal(error.cause, boom);
  assert.match(error.message, /the token provider failed: login down/);
});

test("token_expiring: the provider's token goes in-band and the connection stays", async () => {
  const start = await server.handshakes();
  let asked = 0;
  const chat = connect(server.url(), {
    tokenProvider: async () => (asked += 1) === 1 ? server.token("dave", 4) : server.token("dave", 3600),
    WebSocket,
  });
  await chat.whenReady();
  await next(chat, "token_expiring", 10_000);
  const ok = await next(chat, "auth", 10_000);
  assert.equal(ok.type, "auth");
  assert.equal(asked, 2);
  await sleep(3000); // past the first token's exp
  assert.equal(chat.state, "open");
  assert.equal(await server.handshakes() - start, 1);
  await chat.close();
});

test("a service restart resumes with since/epoch and recovers the gap", async () => {
  const clock = new FakeClock();
  const alice = connect(server.url("resume"), { token: await server.token("alice"), WebSocket, clock, random: () => 1, openTimeoutMs: 60_000 });
  const bob = connect(server.url("resume"), { token: await server.token("bob"), WebSocket, random: () => 0 });
  await alice.whenReady();
  await bob.whenReady();
  const seen = [];
  alice.on("message", (m) => seen.push(m.body));
  const first = next(alice, "message");
  bob.send("before");
  await first;
  const gone = next(alice, "disconnected");
  await server.restartSockets();
  const dropped = await gone;
  assert.equal(dropped.code, 1012);
  assert.equal(dropped.delay, 500); // random() = 1: the ceiling of attempt 0
  await next(bob, "reconnected");
  const echoed = [];
  bob.on("message", (m) => echoed.push(m.body));
  bob.send("gap 1");
  bob.send("gap 2");
  await until(() => echoed.length === 2, 5000, "bob's gap messages echoed");
  const back = next(alice, "reconnected");
  assert.ok(clock.fire(500), "the backoff timer waits");
  const reconnected = await back;
  assert.equal(reconnected.recovered, true);
  await until(() => seen.length === 3, 5000, "the gap replayed");
  assert.deepEqual(seen, ["before", "gap 1", "gap 2"]);
  await alice.close();
  await bob.close();
  assert.equal(clock.timers.size, 0);
});

test("after a real server restart it reconnects and sends the queue", async () => {
  const other = new Server(await freePort());
  await other.start();
  try {
    const chat = connect(other.url(), { token: await other.token("erin"), WebSocket, maxQueue: 3, backoffScale: 0.05 });
    await chat.whenReady();
    const gone = next(chat, "disconnected");
    await other.stop();
    assert.equal((await gone).code, 1012); // uvicorn's own close on shutdown
    for (const n of [0, 1, 2]) chat.send(`queued ${n}`);
    assert.throws(() => chat.send("one too many"), (err) => err instanceof SendQueueFull && /maxQueue=3/.test(err.message));
    assert.equal(chat.queued, 3);
    const back = next(chat, "reconnected", 30_000);
    const got = [];
    chat.on("message", (m) => got.push(m.body));
    await other.start();
    const reconnected = await back;
    assert.equal(reconnected.recovered, false); // the in-memory history went with it
    assert.equal(chat.queued, 0);
    await until(() => got.length === 3, 5000, "the queue delivered");
    assert.deepEqual(got, ["queued 0", "queued 1", "queued 2"]);
    await chat.close();
  } finally {
    await other.stop();
  }
});

test("after a real server restart on Redis history it recovers the gap", async (t) => {
  // The in-memory history goes with the process (the test above: recovered false);
  // on a RedisHistoryStore the room's epoch and messages outlive it.
  if (!(await redisAnswers())) {
    if (process.env.CI) assert.fail("no Redis at 127.0.0.1:6379: the Redis restart test must run in CI");
    t.skip("no Redis at 127.0.0.1:6379");
    return;
  }
  const port = await freePort();
  const env = onRedis();
  let current = new Server(port, undefined, env);
  await current.start();
  const secret = current.secret;
  const clock = new FakeClock();
  let alice;
  let bob;
  try {
    alice = connect(current.url("restart"), { token: await current.token("alice"), WebSocket, clock, random: () => 1, openTimeoutMs: 60_000 });
    const ready = await alice.whenReady();
    assert.equal(typeof ready.epoch, "string");
    assert.equal(ready.offset, 0);
    const seen = [];
    alice.on("message", (m) => seen.push([m.body, m.offset]));
    const first = next(alice, "message");
    alice.send("before");
    await first;
    const gone = next(alice, "disconnected");
    await current.stop();
    const dropped = await gone;
    assert.ok([1012, 1006].includes(dropped.code), `closed with ${dropped.code}`);
    current = new Server(port, secret, env);
    await current.start();
    bob = connect(current.url("restart"), { token: await current.token("bob"), WebSocket });
    assert.equal((await bob.whenReady()).epoch, ready.epoch, "the epoch is Redis's");
    const echoed = [];
    bob.on("message", (m) => echoed.push(m.body));
    for (const n of [0, 1, 2]) bob.send(`missed ${n}`);
    await until(() => echoed.length === 3, 5000, "bob's messages stored and echoed");
    const back = next(alice, "reconnected");
    assert.ok(clock.fire(dropped.delay), "the backoff timer waits");
    const reconnected = await back;
    assert.equal(reconnected.recovered, true);
    assert.equal(reconnected.ready.epoch, ready.epoch);
    await until(() => seen.length === 4, 5000, "the gap replayed");
    bob.send("live");
    await until(() => seen.length === 5, 5000, "the live message");
    assert.deepEqual(seen, [["before", 1], ["missed 0", 2], ["missed 1", 3], ["missed 2", 4], ["live", 5]]);
  } finally {
    await alice?.close();
    await bob?.close();
    await current.stop();
  }
  assert.equal(clock.timers.size, 0);
});

test("the backoff ceilings per close code come from close-codes.json", () => {
  const ceilings = (code, reason) => [0, 1, 2, 3, 4, 5, 6].map((n) => backoffCeiling(policyFor(code, reason), n));
  assert.deepEqual(ceilings(1012), [500, 1000, 2000, 4000, 8000, 10000, 10000]);
  assert.deepEqual(ceilings(1006), [1000, 2000, 4000, 8000, 16000, 30000, 30000]);
  assert.deepEqual(ceilings(1013, "slow_consumer"), [15000, 30000, 60000, 120000, 120000, 120000, 120000]);
  assert.deepEqual(ceilings(4408), [0, 0, 0, 0, 0, 0, 0]);
  assert.equal(policyFor(4408).maxAttempts, 3);
  assert.equal(policyFor(4401, "token_expired: at 12:00").action, "refresh_token");
  assert.equal(policyFor(4401, "token_ambiguous").action, "stop");
  assert.equal(policyFor(4429, "too_many_connections").action, "stop");
  assert.equal(policyFor(4429, "rate_limited").action, "retry");
  assert.equal(policyFor(4403).action, "stop");
  assert.equal(policyFor(4999).action, "stop");
  assert.equal(CLOSE_POLICY.version, 1);
});

test("backoff delays stay within the bounds on a fake clock, and maxAttempts gives up", async () => {
  const port = await freePort(); // nothing listens: every attempt is a 1006
  const clock = new FakeClock();
  let seed = 7;
  const random = () => ((seed = (seed * 16807) % 2147483647) / 2147483647);
  const chat = connect(`ws://127.0.0.1:${port}/ws/chat/lobby`, { token: "x.y.z", WebSocket, clock, random, maxAttempts: 6, openTimeoutMs: 60_000 });
  const delays = [];
  chat.on("disconnected", (e) => delays.push(e));
  const stopped = next(chat, "stopped");
  for (let n = 0; n < 6; n++) {
    await until(() => delays.length === n + 1, 5000, `attempt ${n}`);
    const { delay, attempt, code } = delays[n];
    assert.equal(code, 1006);
    assert.equal(attempt, n);
    assert.ok(delay >= 0 && delay <= backoffCeiling(policyFor(1006), n), `delay ${delay} of attempt ${n}`);
    assert.deepEqual(clock.delays(60_000), [delay]);
    assert.ok(clock.fire(delay));
  }
  const { error } = await stopped;
  assert.match(error.message, /^1006; fix: .*|gave up after 6 tries/);
  assert.match(error.message, /gave up after 6 tries/);
  assert.equal(clock.timers.size, 0);
});

test("close() while reconnecting clears every timer", async () => {
  const port = await freePort();
  const clock = new FakeClock();
  const chat = connect(`ws://127.0.0.1:${port}/ws/chat/lobby`, { token: "x.y.z", WebSocket, clock, random: () => 1 });
  await next(chat, "disconnected");
  assert.equal(clock.timers.size, 1); // the backoff
  await chat.close();
  assert.equal(clock.timers.size, 0);
  assert.equal(chat.state, "closed");
  assert.throws(() => chat.send("x"), ChatError);
  await assert.rejects(chat.whenReady(), /the chat is closed/);
});

test("close() with the real clock leaves no timer and no socket behind", async () => {
  const timeouts = () => process.getActiveResourcesInfo().filter((r) => r === "Timeout").length;
  const baseline = timeouts();
  const chat = connect(server.url(), { token: await server.token("frank"), WebSocket });
  const connecting = chat.close(); // before the handshake ended
  await connecting;
  const open = connect(server.url(), { token: await server.token("frank"), WebSocket });
  await open.whenReady();
  const history = open.history({ limit: 5 });
  await open.close();
  await history.catch(() => {});
  assert.equal(open.state, "closed");
  await sleep(50);
  assert.equal(timeouts(), baseline);
});

test("the server checked every frame it sent against the schema", async () => {
  const frames = await server.frames();
  assert.ok(frames.checked > 50, `${frames.checked} frames checked`);
  assert.deepEqual(frames.violations, []);
  if (process.env.CI) assert.equal(frames.validating, true);
});
