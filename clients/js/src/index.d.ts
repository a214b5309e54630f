// The client's API. The frame types come from the wire protocol's JSON Schema
// (./generated/protocol.d.ts, built by scripts/build.mjs).
import type {
  AuthOk, Error as ErrorFrame, History, Members, Message, OtherFrame, Pong, Presence,
  Ready, Resync, TokenExpiring,
} from "./generated/protocol.js";

export type * from "./generated/protocol.js";

export type Action = "retry" | "refresh_token" | "stop";

export interface ClosePolicy {
  code: number;
  reason: string;
  action: Action;
  fix: string;
  /** What a client does, in words (close-codes.json's client_should). */
  clientShould: string;
  backoffMs: { base: number; cap: number } | null;
  maxAttempts: number | null;
}

export declare const ABNORMAL: 1006;
export declare const DEFAULT_MAX_QUEUE: 100;
export declare const DEFAULT_OPEN_TIMEOUT_MS: 10000;
/** The close-code policy data, src/wschat/schema/close-codes.json. */
export declare const CLOSE_POLICY: {
  version: number;
  actions: Record<Action, string>;
  unknown: { action: Action; client_should: string };
  codes: Array<{
    code: number; reason: string; sent_by: string; when: string; client_should: string;
    action: Action; fix: string; backoff_ms?: { base: number; cap: number }; max_attempts?: number;
  }>;
};
export declare function policyFor(code: number, reason?: string): ClosePolicy;
export declare function backoffCeiling(policy: ClosePolicy, attempt: number): number;
export declare function backoffDelay(policy: ClosePolicy, attempt: number, random?: () => number): number;

export declare class ChatError extends Error {}
export declare class ChatStopped extends ChatError {
  readonly code: number;
  readonly reason: string;
  readonly fix: string;
}
export declare class SendQueueFull extends ChatError {}
export declare class HistoryError extends ChatError {
  readonly code: string;
  readonly serverMessage: string;
}
export declare class MembersError extends ChatError {
  readonly code: string;
  readonly serverMessage: string;
}

export type ChatState = "connecting" | "open" | "reconnecting" | "stopped" | "closed";

export interface Disconnected { type: "disconnected"; code: number; reason: string; fix: string; delay: number; attempt: number }
export interface Reconnected { type: "reconnected"; recovered: boolean; ready: Ready }
export interface Stopped { type: "stopped"; error: Error }
export interface Closed { type: "closed"; code: number; reason: string }
export interface StateChange { type: "state"; state: ChatState }
export interface RefreshFailed { type: "refresh_failed"; error: Error }

export interface ChatEvents {
  ready: Ready; message: Message; presence: Presence; error: ErrorFrame; pong: Pong;
  auth: AuthOk; resync: Resync; token_expiring: TokenExpiring; history: History; members: Members;
  disconnected: Disconnected; reconnected: Reconnected; stopped: Stopped; closed: Closed;
  state: StateChange; refresh_failed: RefreshFailed;
}
export type ChatEvent = ChatEvents[keyof ChatEvents] | OtherFrame;

export interface Clock {
  setTimeout(callback: () => void, ms: number): unknown;
  clearTimeout(handle: any): void;
}

export interface ConnectOptions {
  token?: string | null;
  tokenProvider?: (() => string | Promise<string>) | null;
  /** A WebSocket constructor (Node 20: `WebSocket` from the `ws` package). */
  WebSocket?: new (url: string, protocols: string[]) => any;
  maxQueue?: number;
  maxAttempts?: number | null;
  random?: () => number;
  clock?: Clock;
  backoffScale?: number;
  openTimeoutMs?: number;
}

export declare class Chat {
  constructor(url: string, options: ConnectOptions);
  readonly state: ChatState;
  readonly error: Error | null;
  readonly memberCount: number;
  readonly queued: number;
  readonly members: string[];
  readonly position: { epoch: string | null; offset: number | null };
  on<K extends keyof ChatEvents>(type: K, listener: (event: ChatEvents[K]) => void): () => void;
  on(type: "*", listener: (event: ChatEvent) => void): () => void;
  on(type: string, listener: (event: OtherFrame) => void): () => void;
  whenReady(): Promise<Ready>;
  send(body: unknown, options?: { clientId?: string }): void;
  history(options?: { before?: number; limit?: number }): Promise<History>;
  membersPage(options?: { cursor?: string | null; limit?: number }): Promise<Members>;
  refresh(token: string): void;
  close(): Promise<void>;
}

export declare function connect(url: string, options: ConnectOptions): Chat;
