// Type definitions for roomhost room scripts (rooms-js/<kind>.js).
// Editors that read jsconfig.json (VS Code, WebStorm, Zed...) pick these up
// for every script in this directory: `room.` and the hooks autocomplete.

/** The connection behind an event: one browser tab (or HTTP client). */
interface Conn {
  /** Unique per connection; stable across the tab's rejoins. */
  readonly id: string;
  /** The user: the `user` connect param or a signed token's subject. */
  readonly user: string;
  /** Transport facts, e.g. `{ transport: "websocket" }`. */
  readonly meta: Readonly<Record<string, unknown>>;
}

/** One tab's presence entry (Phoenix.Presence shape). */
interface PresenceMeta {
  phx_ref: string;
  /** Milliseconds since the epoch. */
  online_at: number;
  phx_ref_prev?: string;
  /** Fields the client set with `presence_update`, e.g. `typing`. */
  [field: string]: unknown;
}

/** `{ user: { metas: [...] } }`, one meta per tab. */
type PresenceState = Record<string, { metas: PresenceMeta[] }>;

/** Why a channel left, as `onLeave` receives it. */
type LeaveReason = "leave" | "disconnect" | "rejoin" | "crash" | "shutdown" | "kicked";

/** An HTTP request into the room (`/rooms/<topic>/http/<path>`), for `onRequest`. */
interface Request {
  readonly method: "GET" | "POST" | "PUT" | "PATCH" | "DELETE";
  /** The path after `/http`, `/` when none. */
  readonly path: string;
  /** The query parameters (the connection token left out). */
  readonly query: Readonly<Record<string, string>>;
  /** Lower-case names; hop-by-hop headers, `cookie` and `authorization` left out. */
  readonly headers: Readonly<Record<string, string>>;
  /** The body as text (parse JSON yourself). */
  readonly body: string;
}

/** What `onRequest` may return for a response of its own; any other JSON
 *  value is answered `200 application/json`. */
interface Response {
  status: number;
  headers?: Record<string, string>;
  /** A string is sent as text/plain, anything else as JSON. */
  body?: unknown;
}

/** Any JSON value a hook may return or a payload may hold. */
type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** A binary payload: what a V2 binary push delivers to `onMessage`, and what
 *  `onMessage`, `room.broadcast` and `room.push` may send back as bytes
 *  (an `ArrayBuffer` works too). V1 and long-poll connections receive
 *  `binary_unsupported` `{event, bytes, reason}` instead. */
type Bytes = Uint8Array;

interface Room {
  /** `kind:name`, e.g. `chat:lobby`. */
  readonly topic: string;
  readonly kind: string;
  readonly name: string;
  /** Counts the room's (re)starts and code reloads. */
  readonly generation: number;
  /** Pushes `event` to every joined channel, or all but connection `except`.
   *  Event names `phx_*` and the host's own events are reserved. A
   *  `Uint8Array` payload is a binary broadcast, encoded once for everyone. */
  broadcast(event: string, payload?: Json | Bytes | ArrayBuffer, options?: { except?: string }): void;
  /** Pushes `event` to one connection's channel (bytes as a binary push). */
  push(connId: string, event: string, payload?: Json | Bytes | ArrayBuffer): void;
  /** The channels joined now. */
  connections(): Conn[];
  /** Who is here, with one meta per tab. */
  presence(): PresenceState;
  /** Runs `onTimer(name, payload, {late_ms})` in `delayMs` (at least 10) as a
   *  journaled event; setting a name again replaces it. At most 1,000 a room.
   *  Timers are room state: they survive crashes, restarts and idle stops.
   *  The payload is JSON only: bytes throw. */
  setTimer(name: string, delayMs: number, payload?: Json): void;
  /** Cancels timer `name`; returns whether there was one. */
  clearTimer(name: string): boolean;
  /** The pending timers, earliest first (`at`: ms since the epoch). */
  timers(): { name: string; at: number }[];
  /** Closes connection `connId`'s channel: it gets `kicked` `{reason}` and
   *  `phx_close` (phoenix.js does not rejoin), then `onLeave(conn, "kicked")`
   *  runs. Returns false if it is not joined. */
  kick(connId: string, reason?: string): boolean;
  /** Sends `event` to room `topic`'s `onMessage`, exactly once, in order per
   *  pair of rooms, once this event is durable. The target sees a conn
   *  `{id: "room:<this topic>", user: "<this topic>", meta: {room: true}}`.
   *  Throws for an invalid topic, an unknown kind, over 100 sends in one
   *  event, or a binary payload (JSON only). */
  send(topic: string, event: string, payload?: Json): void;
}

/** The room this script instance runs. */
declare const room: Room;

/** Deterministic inside a hook: the event's recorded seed. */
declare const crypto: {
  randomUUID(): string;
  getRandomValues<T extends ArrayBufferView>(array: T): T;
};

/**
 * Hooks a kind exports (only `onMessage` is required):
 *
 * ```js
 * export function onJoin(conn, params) { return { ...reply } }   // throw → join refused
 * export function onMessage(conn, event, payload) { return {} }  // throw → error reply;
 *                                  // payload is a Uint8Array for a binary push; return one for a binary reply
 * export function onLeave(conn, reason) {}
 * export function onTimer(name, payload, { late_ms }) {}         // a timer fired
 * export function onRequest(req) { return { status: 200, body: "hi" } }  // HTTP into the room
 * export function snapshot() { return state }                    // JSON-serializable
 * export function restore(state) {}
 * export const readOnlyJoins = true;  // onJoin only reads: joins still work while storage is down
 * ```
 */
type OnJoin = (conn: Conn, params: Record<string, Json>) => unknown;
type OnMessage = (conn: Conn, event: string, payload: Record<string, Json> | Bytes) => Json | Bytes | ArrayBuffer | void | Promise<Json | Bytes | ArrayBuffer | void>;
type OnLeave = (conn: Conn, reason: LeaveReason) => void;
type OnTimer = (name: string, payload: Json, info: { late_ms: number }) => void;
type OnRequest = (req: Request) => Response | Json;
type Snapshot = () => Json;
type Restore = (state: any) => void;
/** `true` when `onJoin` changes no state: while the room's storage refuses
 *  writes, a join still runs it (as a query, its changes undone) so a tab
 *  gets its reply and the room's broadcasts; the join is journaled when the
 *  storage takes writes again. */
type ReadOnlyJoins = boolean;
