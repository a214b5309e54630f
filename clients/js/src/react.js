// useChat: the wschat client as a React hook (React is a peer dependency).
import { useCallback, useEffect, useRef, useState } from "react";
import { ChatStopped, connect, policyFor } from "./index.js";

/** Messages the hook keeps, at most (the oldest go first). */
export const DEFAULT_MAX_MESSAGES = 500;

const INITIAL = Object.freeze({
  messages: [],
  members: [],
  memberCount: 0,
  state: "connecting",
  refusal: null,
  error: null,
});

function refusalOf(code, reason, fix) {
  return { code, reason, fix: fix ?? policyFor(code, reason).fix };
}

/**
 * Connect to a wschat room while the component is mounted.
 *
 * Returns { messages, members, memberCount, state, refusal, error, send, history, chat }.
 * `refusal` is the last close the server refused with (4xxx, or the close the client
 * stopped on): { code, reason, fix }; a later `ready` clears it. The connection opens
 * again when `url` or `options.token` changes; other options are read at connect
 * time. Unmounting closes it (1000 "bye") and clears every timer.
 */
export function useChat(url, options = {}) {
  const [snapshot, setSnapshot] = useState(INITIAL);
  const chatRef = useRef(null);
  const optionsRef = useRef(options);
  optionsRef.current = options;
  const token = options.token ?? null;

  useEffect(() => {
    if (!url) return undefined;
    const opts = optionsRef.current;
    const maxMessages = opts.maxMessages ?? DEFAULT_MAX_MESSAGES;
    const chat = connect(url, opts);
    chatRef.current = chat;
    let live = true;
    const update = (change) => {
      if (live) setSnapshot((prev) => ({ ...prev, ...change(prev) }));
    };
    const addMessages = (prev, incoming) => {
      const seen = new Set(prev.messages.map((m) => m.id));
      const added = incoming.filter((m) => !seen.has(m.id));
      if (!added.length) return {};
      return { messages: [...prev.messages, ...added].slice(-maxMessages) };
    };
    setSnapshot(INITIAL);
    const offs = [
      chat.on("state", ({ state }) => update(() => ({ state }))),
      chat.on("ready", () =>
        update(() => ({ members: chat.members, memberCount: chat.memberCount, refusal: null })),
      ),
      chat.on("presence", () => update(() => ({ members: chat.members, memberCount: chat.memberCount }))),
      chat.on("message", (message) => update((prev) => addMessages(prev, [message]))),
      chat.on("disconnected", ({ code, reason, fix }) => {
        if (code >= 4000) update(() => ({ refusal: refusalOf(code, reason, fix) }));
      }),
      chat.on("stopped", ({ error }) =>
        update(() => ({
          error,
          refusal: error instanceof ChatStopped ? refusalOf(error.code, error.reason, error.fix) : null,
        })),
      ),
      chat.on("reconnected", ({ recovered }) => {
        if (recovered) return;
        // The gap was not replayed: load what the room kept since.
        chat.history({ limit: 50 }).then(
          (page) => update((prev) => addMessages(prev, page.messages)),
          () => {},
        );
      }),
    ];
    return () => {
      live = false;
      for (const off of offs) off();
      chatRef.current = null;
      chat.close();
    };
  }, [url, token]);

  const send = useCallback((body, sendOptions) => {
    const chat = chatRef.current;
    if (!chat) throw new Error("useChat: not connected (no url, or unmounted)");
    chat.send(body, sendOptions);
  }, []);

  const history = useCallback((historyOptions) => {
    const chat = chatRef.current;
    if (!chat) return Promise.reject(new Error("useChat: not connected (no url, or unmounted)"));
    return chat.history(historyOptions);
  }, []);

  return { ...snapshot, send, history, chat: chatRef.current };
}
