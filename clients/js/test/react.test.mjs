// useChat in a real React renderer against a real wschat server.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { act, createElement } from "react";
import TestRenderer from "react-test-renderer";
import { WebSocket } from "ws";
import { connect } from "../src/index.js";
import { useChat } from "../src/react.js";
import { FakeClock, Server, freePort, next, until } from "./server.mjs";

globalThis.IS_REACT_ACT_ENVIRONMENT = false;
process.env.NODE_ENV ??= "test";

let server;
before(async () => {
  server = await Server.start();
});
after(async () => {
  await server?.stop();
});

/** Render a component that calls useChat(url, options); `latest()` is its last result. */
async function mount(url, options) {
  let result = null;
  function Probe(props) {
    result = useChat(props.url, props.options);
    return null;
  }
  let root;
  await act(async () => {
    root = TestRenderer.create(createElement(Probe, { url, options }));
  });
  return {
    latest: () => result,
    update: (nextUrl, nextOptions) =>
      act(async () => root.update(createElement(Probe, { url: nextUrl, options: nextOptions }))),
    unmount: () => act(async () => root.unmount()),
  };
}

test("useChat: state, members and messages, and unmount closes the socket", async () => {
  const bob = connect(server.url("hook"), { token: await server.token("bob"), WebSocket });
  await bob.whenReady();
  const view = await mount(server.url("hook"), { token: await server.token("alice"), WebSocket });
  await until(() => view.latest().state === "open", 10_000, "the hook connects");
  await until(() => view.latest().members.join() === "alice,bob", 5000, "members");
  assert.equal(view.latest().refusal, null);
  const got = next(bob, "message");
  view.latest().send("from the hook");
  assert.equal((await got).body, "from the hook");
  bob.send("to the hook");
  await until(() => view.latest().messages.length === 2, 5000, "messages");
  assert.deepEqual(view.latest().messages.map((m) => [m.user, m.body]), [
    ["alice", "from the hook"],
    ["bob", "to the hook"],
  ]);
  const chat = view.latest().chat;
  await view.unmount();
  await until(() => !bob.members.includes("alice"), 5000, "bob sees alice leave");
  assert.equal(chat.state, "closed");
  await bob.close();
});

test("useChat: a refused room shows the refusal after one handshake", async () => {
  const start = await server.handshakes();
  const view = await mount(server.url("private-hook"), { token: await server.token("alice"), WebSocket });
  await until(() => view.latest().state === "stopped", 10_000, "the hook stops");
  const { refusal, error } = view.latest();
  assert.equal(refusal.code, 4403);
  assert.match(refusal.reason, /^forbidden/);
  assert.match(refusal.fix, /authorize refused/);
  assert.equal(error.code, 4403);
  assert.equal((await server.handshakes()) - start, 1);
  await view.unmount();
});

test("useChat: a new token reconnects, a null url disconnects", async () => {
  const view = await mount(server.url("hook2"), { token: "test", WebSocket });
  await until(() => view.latest().state === "stopped", 10_000, "a malformed token stops");
  assert.equal(view.latest().refusal.code, 4401);
  await view.update(server.url("hook2"), { token: await server.token("alice"), WebSocket });
  await until(() => view.latest().state === "open", 10_000, "the new token connects");
  assert.equal(view.latest().refusal, null);
  const chat = view.latest().chat;
  await view.update(null, {});
  await until(() => chat.state === "closed", 5000, "the old connection closes");
  await view.unmount();
});

test("useChat: after a real server restart it loads what it missed with history()", async () => {
  // The in-memory history went with the old process: the reconnect is not recovered,
  // so the hook asks the new server for the latest messages and adds the new ones.
  const port = await freePort();
  let current = new Server(port);
  await current.start();
  const clock = new FakeClock();
  const openTimeoutMs = 60_000;
  let view;
  let bob;
  try {
    view = await mount(current.url("hook-restart"), {
      token: await current.token("alice"), WebSocket, clock, random: () => 1, openTimeoutMs,
    });
    await until(() => view.latest().state === "open", 10_000, "the hook connects");
    view.latest().send("before");
    await until(() => view.latest().messages.length === 1, 5000, "her message");
    await current.stop();
    await until(() => clock.delays(openTimeoutMs).length === 1, 10_000, "a backoff timer");
    assert.equal(view.latest().state, "reconnecting");
    current = new Server(port, current.secret);
    await current.start();
    bob = connect(current.url("hook-restart"), { token: await current.token("bob"), WebSocket });
    await bob.whenReady();
    const echoed = [];
    bob.on("message", (m) => echoed.push(m.body));
    bob.send("gap 1");
    bob.send("gap 2");
    await until(() => echoed.length === 2, 5000, "bob's messages stored");
    const [delay] = clock.delays(openTimeoutMs);
    assert.ok(clock.fire(delay));
    await until(() => view.latest().messages.length === 3, 10_000, "the gap loaded");
    assert.deepEqual(view.latest().messages.map((m) => [m.user, m.body]), [
      ["alice", "before"],
      ["bob", "gap 1"],
      ["bob", "gap 2"],
    ]);
    assert.equal(view.latest().state, "open");
  } finally {
    await view?.unmount();
    await bob?.close();
    await current.stop();
  }
});
