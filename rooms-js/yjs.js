// rooms-js/yjs.js — one collaborative Yjs document per topic "yjs:<name>",
// for the unmodified `y-phoenix-channel` provider (any Phoenix client that
// speaks y-protocols works). The room runs no Yjs: it keeps the document's
// binary updates, relays them, and brings joiners up to date.
//
// What the provider sends (y-phoenix-channel 0.1.1), each as a binary push:
//   "yjs_sync"  [0 sync, 0 step1, stateVector]     after every join (and on its
//                                                   resync interval)
//   "yjs"       [0 sync, 2 update, update]          every local edit
//               [0 sync, 1 step2, update]           its answer to our step1
//               [1 awareness, awarenessUpdate]      cursors, names
// and it reads every binary push of event "yjs" from the room.
//
// Sync: a client's step1 is answered with every kept update (as sync
// updates), then an empty step2 (the provider counts itself synced on a
// step2, so it is last), then our own step1 with an empty state vector: the
// client answers with its whole document, which brings us (and, relayed,
// everyone else) whatever it edited while it was away.
//
// Compaction: a client's whole document covers every update it had been
// sent before our step1, so it replaces them: the log becomes that state
// plus the updates that came after. Every sync compacts this way; a room
// whose log grows past MAX_UPDATES updates or MAX_BYTES without a join asks
// one synced client for its document the same way. Updates are idempotent
// in Yjs, so an update kept twice costs bytes, never correctness.
//
// Limits: a client's whole document must fit in one frame (`--max-frame`,
// 64 KiB by default): raise it for large documents.

const SYNC = 0, AWARENESS = 1;
const STEP1 = 0, STEP2 = 1, UPDATE = 2;
const MAX_UPDATES = 500;
const MAX_BYTES = 1 << 20;

let updates = [];        // Uint8Array updates: applying them all gives the document
let bytes = 0;           // their total size
const asked = new Map(); // conn id -> { upto, relay }: whose whole document we wait for
const synced = new Set(); // conn ids that were sent the whole log
const aware = new Map(); // conn id -> { message, clients: Map<clientID, clock> }

export function onMessage(conn, event, payload) {
  if (!(payload instanceof Uint8Array)) throw new Error(`${event} needs a binary y-protocols message`);
  const read = reader(payload);
  const type = read.uint();
  if (type === AWARENESS) return awareness(conn, payload, read.bytes());
  if (type !== SYNC) throw new Error(`unknown y-protocols message type ${type}`);
  const step = read.uint();
  if (step === STEP1) return sync(conn);
  if (step !== STEP2 && step !== UPDATE) throw new Error(`unknown sync step ${step}`);
  const update = read.bytes();
  const wanted = asked.get(conn.id);
  if (step === STEP2 && wanted) {
    asked.delete(conn.id);
    rebase(update, wanted.upto);
    if (wanted.relay) room.broadcast("yjs", message(SYNC, UPDATE, update), { except: conn.id });
  } else {
    room.broadcast("yjs", payload, { except: conn.id });
    keep(update);
  }
  return {};
}

export function onLeave(conn) {
  asked.delete(conn.id);
  synced.delete(conn.id);
  const gone = aware.get(conn.id);
  aware.delete(conn.id);
  // Others would show the tab's cursor until it times out: remove it now.
  if (gone && gone.clients.size > 0) room.broadcast("yjs", awarenessRemoval(gone.clients));
}

// The document's updates and the synced tabs are durable; cursors are not.
export function snapshot() {
  return { updates: updates.map(toBase64), asked: Array.from(asked), synced: Array.from(synced) };
}

export function restore(state) {
  updates = state.updates.map(fromBase64);
  bytes = updates.reduce((n, u) => n + u.length, 0);
  asked.clear();
  for (const [id, wanted] of state.asked) asked.set(id, wanted);
  synced.clear();
  for (const id of state.synced) synced.add(id);
}

function sync(conn) {
  for (const update of updates) room.push(conn.id, "yjs", message(SYNC, UPDATE, update));
  room.push(conn.id, "yjs", message(SYNC, STEP2, EMPTY_UPDATE));
  for (const [id, a] of aware) if (id !== conn.id) room.push(conn.id, "yjs", a.message);
  // A tab's first sync may bring edits made while it was away: its answer
  // goes to the others too. A resync (the provider's resyncInterval) only
  // compacts.
  const first = !synced.has(conn.id);
  synced.add(conn.id);
  ask(conn.id, first);
  return {};
}

// Our step1 with an empty state vector: the client answers with its whole
// document, which covers the `upto` updates it has been sent.
function ask(connId, relay) {
  asked.set(connId, { upto: updates.length, relay });
  room.push(connId, "yjs", message(SYNC, STEP1, EMPTY_STATE_VECTOR));
}

function keep(update) {
  updates.push(update);
  bytes += update.length;
  if ((updates.length > MAX_UPDATES || bytes > MAX_BYTES) && asked.size === 0) {
    const first = Array.from(synced)[0];
    if (first !== undefined) ask(first, false);
  }
}

function rebase(state, upto) {
  updates = [state, ...updates.slice(upto)];
  bytes = updates.reduce((n, u) => n + u.length, 0);
  // Other answers may not cover this state: they replace nothing.
  for (const wanted of asked.values()) wanted.upto = 0;
}

function awareness(conn, payload, update) {
  const clients = aware.get(conn.id)?.clients ?? new Map();
  const read = reader(update);
  for (let n = read.uint(); n > 0; n--) {
    const client = read.uint();
    const clock = read.uint();
    const state = read.bytes();
    // "null" is a removal (y-protocols writes JSON.stringify(null)).
    if (state.length === 4 && state[0] === 0x6e) clients.delete(client);
    else clients.set(client, clock);
  }
  aware.set(conn.id, { message: payload, clients });
  room.broadcast("yjs", payload, { except: conn.id });
  return {};
}

function awarenessRemoval(clients) {
  const out = writer();
  out.uint(clients.size);
  for (const [client, clock] of clients) {
    out.uint(client);
    out.uint(clock + 1);
    out.bytes(NULL_STATE);
  }
  return message(AWARENESS, null, out.done());
}

// --- lib0 encoding: varuint (7 bits a byte, low first) and length-prefixed bytes
const EMPTY_UPDATE = new Uint8Array([0, 0]);        // Y.encodeStateAsUpdate(new Y.Doc())
const EMPTY_STATE_VECTOR = new Uint8Array([0]);     // Y.encodeStateVector(new Y.Doc())
const NULL_STATE = new Uint8Array([0x6e, 0x75, 0x6c, 0x6c]); // "null"

function message(type, step, data) {
  const out = writer();
  out.uint(type);
  if (step !== null) out.uint(step);
  out.bytes(data);
  return out.done();
}

function reader(buf) {
  let at = 0;
  const uint = () => {
    let n = 0, mult = 1;
    for (;;) {
      if (at >= buf.length) throw new Error("truncated y-protocols message");
      const b = buf[at++];
      n += (b & 0x7f) * mult;
      if (b < 0x80) return n;
      mult *= 128;
      if (mult > 2 ** 53) throw new Error("varuint too large");
    }
  };
  return {
    uint,
    bytes() {
      const len = uint();
      if (at + len > buf.length) throw new Error("truncated y-protocols message");
      const out = buf.slice(at, at + len);
      at += len;
      return out;
    },
  };
}

function writer() {
  const parts = [];
  const uint = (n) => {
    while (n > 0x7f) { parts.push((n % 128) | 0x80); n = Math.floor(n / 128); }
    parts.push(n);
  };
  let chunks = [];
  const flush = () => { if (parts.length) { chunks.push(Uint8Array.from(parts)); parts.length = 0; } };
  return {
    uint,
    bytes(data) { uint(data.length); flush(); chunks.push(data); },
    done() {
      flush();
      const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
      let at = 0;
      for (const c of chunks) { out.set(c, at); at += c.length; }
      return out;
    },
  };
}

function toBase64(bytes) {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x2000) s += String.fromCharCode(...bytes.subarray(i, i + 0x2000));
  return btoa(s);
}

function fromBase64(text) {
  const s = atob(text);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}
