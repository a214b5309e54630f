import type { Chat, ChatState, ConnectOptions, History, Message } from "./index.js";

export declare const DEFAULT_MAX_MESSAGES: 500;

export interface Refusal {
  code: number;
  reason: string;
  fix: string;
}

export interface UseChatOptions extends ConnectOptions {
  /** Messages kept, at most (default 500). */
  maxMessages?: number;
}

export interface UseChat {
  messages: Message[];
  members: string[];
  memberCount: number;
  state: ChatState;
  /** The last close the server refused with (4xxx) or the client stopped on; cleared by `ready`. */
  refusal: Refusal | null;
  error: Error | null;
  send(body: unknown, options?: { clientId?: string }): void;
  history(options?: { before?: number; limit?: number }): Promise<History>;
  chat: Chat | null;
}

export declare function useChat(url: string | null | undefined, options?: UseChatOptions): UseChat;
