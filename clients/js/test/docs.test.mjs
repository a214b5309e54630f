// docs/clients.md: its TypeScript examples type-check against the package's
// declarations (tsc --strict) and run against a real wschat server.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import ts from "typescript";
import { act, createElement } from "react";
import TestRenderer from "react-test-renderer";
import { WebSocket } from "ws";
import { Server, until } from "./server.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const page = readFileSync(join(here, "..", "..", "..", "docs", "clients.md"), "utf8");
const out = join(here, ".docs");
const blocks = [...page.matchAll(/```(tsx?)\n(.*?)```/gs)].map((m) => ({ lang: m[1], code: m[2] }));
globalThis.IS_REACT_ACT_ENVIRONMENT = false;
// The React example takes the default WebSocket, which Node 20 lacks.
globalThis.WebSocket ??= WebSocket;

let server;
before(async () => {
  server = await Server.start();
  rmSync(out, { recursive: true, force: true });
  mkdirSync(out, { recursive: true });
  blocks.forEach((b, i) => writeFileSync(join(out, `example${i}.${b.lang}`), b.code));
});
after(async () => {
  await server?.stop();
});

/** Import example `i` of the page, compiled to JS with the package's own files. */
async function load(i) {
  const { outputText } = ts.transpileModule(blocks[i].code, {
    compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022, jsx: ts.JsxEmit.ReactJSX },
  });
  const src = (name) => pathToFileURL(join(here, "..", "src", name)).href;
  const code = outputText
    .replaceAll('"wschat-client/react"', JSON.stringify(src("react.js")))
    .replaceAll('"wschat-client"', JSON.stringify(src("index.js")));
  const file = join(out, `example${i}.mjs`);
  writeFileSync(file, code);
  return import(pathToFileURL(file).href);
}

const find = (needle) => blocks.findIndex((b) => b.code.includes(needle));

test("the page has three TypeScript examples and they type-check", () => {
  assert.deepEqual(blocks.map((b) => b.lang), ["ts", "ts", "tsx"]);
  const tsc = join(here, "..", "node_modules", "typescript", "bin", "tsc");
  try {
    execFileSync(process.execPath, [tsc, "-p", join(here, "tsconfig.json")], { encoding: "utf8" });
  } catch (err) {
    assert.fail(`tsc found errors:\n${err.stdout}${err.stderr}`);
  }
});

test("the connect example chats", async () => {
  const { main } = await load(find("export async function main"));
  const start = await server.handshakes();
  assert.equal(await main(server.url("docs"), await server.token("alice")), 'alice in docs; alice: {"text":"hello"}');
  assert.equal((await server.handshakes()) - start, 1);
});

test("the refusal example prints the code, the reason and the fix", async () => {
  const { refused } = await load(find("export async function refused"));
  const start = await server.handshakes();
  assert.match(await refused(server.url("docs")), /^4401 token_malformed: send a real JWT/);
  assert.equal((await server.handshakes()) - start, 1);
});

test("the React example renders the room, and the refusal", async () => {
  const { Room } = await load(find("useChat"));
  let root;
  const token = await server.token("alice");
  await act(async () => {
    root = TestRenderer.create(createElement(Room, { url: server.url("docs-react"), token }));
  });
  const text = () => JSON.stringify(root.toJSON());
  await until(() => text().includes("open") && text().includes("alice"), 10_000, `the room renders: ${text()}`);
  await act(async () => root.update(createElement(Room, { url: server.url("private-docs"), token })));
  await until(() => text().includes("4403"), 10_000, `the refusal renders: ${text()}`);
  assert.match(text(), /authorize refused/);
  await act(async () => root.unmount());
});
