// useChat in a real React renderer against a real wschat server.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { act, createElement } from "react";
import TestRenderer from "react-test-renderer";
import { WebSocket } from "ws";
import { connect } from "../src/index.js";
import { useChat } from "../src/react.js";
import { Server, next, until } from "./server.mjs";

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
