// roomhost prelude: evaluated in every room context before the kind's script.
//
// It turns the host's native functions (strings in, strings out) into the
// documented globals (`room`, `console`), makes time and randomness
// deterministic per event, and exposes one dispatcher, `__roomhost`, that the
// host calls for every hook. Nothing here is visible to scripts except the
// documented globals and the (non-enumerable) dispatcher.
const native = globalThis.__roomhost_native;
delete globalThis.__roomhost_native;

// --- Deterministic time and randomness -----------------------------------
// Inside a hook, Date.now() / new Date() return the event's recorded time and
// Math.random() draws from the event's recorded seed, so replaying the
// journal rebuilds the same state.
let clock = Date.now();
const RealDate = Date;
function RoomDate(...args) {
  if (!new.target) return new RealDate(clock).toString();
  return Reflect.construct(RealDate, args.length === 0 ? [clock] : args, new.target);
}
RoomDate.prototype = RealDate.prototype;
RoomDate.now = () => clock;
RoomDate.parse = RealDate.parse;
RoomDate.UTC = RealDate.UTC;
Object.defineProperty(RealDate.prototype, "constructor", { value: RoomDate });
globalThis.Date = RoomDate;
// (The host adds no `performance`: its `now()` reads the real clock, so a
// replay would diverge, and scripts are not documented to have a timer.)

// sfc32, seeded per event from two 32-bit halves. Seeding is lazy: most
// events never draw a random number, so the seed is only mixed in on the
// first draw of an event. The host sets the first seed (`at`) before the
// kind's module runs, so the prelude does not seed at all.
let a = 0, b = 0, c = 0, d = 1;
let seedHi = 0, seedLo = 0, seeded = false;
function next() {
  if (!seeded) {
    seeded = true;
    seed(seedHi, seedLo);
  }
  a |= 0; b |= 0; c |= 0; d |= 0;
  const t = (((a + b) | 0) + d) | 0;
  d = (d + 1) | 0;
  a = b ^ (b >>> 9);
  b = (c + (c << 3)) | 0;
  c = (c << 21) | (c >>> 11);
  c = (c + t) | 0;
  return t >>> 0;
}
function seed(hi, lo) {
  a = hi; b = lo; c = hi ^ 0x9e3779b9; d = lo ^ 0x85ebca6b;
  for (let i = 0; i < 12; i++) next();
}
Math.random = () => next() / 4294967296;
const hex = (n) => n.toString(16).padStart(8, "0");
globalThis.crypto = Object.freeze({
  randomUUID() {
    const w = [next(), next(), next(), next()];
    w[1] = (w[1] & 0xffff0fff) | 0x4000;
    w[2] = (w[2] & 0x3fffffff) | 0x80000000;
    const h = w.map(hex).join("");
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  },
  getRandomValues(array) {
    if (!ArrayBuffer.isView(array)) throw new TypeError("getRandomValues needs a typed array");
    const bytes = new Uint8Array(array.buffer, array.byteOffset, array.byteLength);
    for (let i = 0; i < bytes.length; i++) bytes[i] = next() & 0xff;
    return array;
  },
});

// --- console -> host log --------------------------------------------------
function show(v) {
  if (typeof v === "string") return v;
  if (v instanceof Error) return v.stack ? `${v.name}: ${v.message}\n${v.stack}` : String(v);
  try {
    const s = JSON.stringify(v);
    return s === undefined ? String(v) : s;
  } catch {
    return String(v);
  }
}
const log = (level) => (...args) => native.log(level, args.map(show).join(" "));
globalThis.console = Object.freeze({
  log: log("log"), info: log("info"), warn: log("warn"), error: log("error"), debug: log("log"),
});

// --- room -----------------------------------------------------------------
const members = new Map(); // conn id -> frozen conn object, in join order
// Read on first use: a warm context evaluates this prelude before it knows
// which room it will be.
let identity = null;
const ident = () => (identity ??= JSON.parse(native.identity()));
const RESERVED = new Set(["presence_state", "presence_diff", "room_info", "room_reloaded", "script_error", "storage", "kicked", "binary_unsupported"]);
function eventName(event) {
  if (typeof event !== "string" || event.length === 0 || event.length > 255)
    throw new TypeError("event must be a non-empty string of at most 255 characters");
  if (event.startsWith("phx_") || RESERVED.has(event))
    throw new TypeError(`event name "${event}" is reserved by the host`);
  return event;
}
// A Uint8Array or ArrayBuffer is bytes (typeof first: the native check
// only runs for objects, and is false while no typed array exists).
const isBytes = (v) => typeof v === "object" && v !== null && native.isBytes(v);
function payloadJson(payload) {
  if (isBytes(payload)) throw new TypeError("binary payloads go only to room.broadcast, room.push and onMessage results");
  const json = JSON.stringify(payload === undefined ? {} : payload);
  if (json === undefined) throw new TypeError("payload must be JSON-serializable");
  return json;
}
// What room.broadcast / room.push carry: bytes as they are, or JSON text.
const payloadOut = (payload) => (isBytes(payload) ? payload : payloadJson(payload));
// Timers are room state like any other: set by hooks, so replaying the
// journal sets them again; kept in snapshots. The host only hears of the next
// one due, to fire it as an event.
const timers = new Map(); // name -> { at, payload (JSON) }
const MAX_TIMERS = 1000;
const MIN_DELAY_MS = 10;
let nextTimer = null; // { name, at } of the first due, as told to the host
const before = (at, name, next) => next === null || at < next.at || (at === next.at && name < next.name);
function tellNextTimer(next) {
  nextTimer = next;
  if (next === null) native.nextTimer(null, 0);
  else native.nextTimer(next.name, next.at);
}
// After the first due timer changed or went: look for the new first one.
function findNextTimer() {
  let next = null;
  for (const [name, t] of timers) if (before(t.at, name, next)) next = { name, at: t.at };
  tellNextTimer(next);
}
// After timer `name` was set to `at`: O(1) unless it was the first one.
function timerSet(name, at) {
  if (before(at, name, nextTimer)) tellNextTimer({ name, at });
  else if (nextTimer.name === name) findNextTimer();
}
function timerGone(name) {
  if (nextTimer !== null && nextTimer.name === name) findNextTimer();
}
function timerName(name) {
  if (typeof name !== "string" || name.length === 0 || name.length > 128)
    throw new TypeError("timer name must be a non-empty string of at most 128 characters");
  return name;
}
const room = Object.freeze({
  get topic() { return ident().topic; },
  get kind() { return ident().kind; },
  get name() { return ident().name; },
  get generation() { return native.generation(); },
  broadcast(event, payload, options) {
    const except = options?.except;
    native.broadcast(eventName(event), payloadOut(payload), except == null ? null : String(except));
  },
  push(connId, event, payload) {
    native.push(String(connId), eventName(event), payloadOut(payload));
  },
  connections() { return Array.from(members.values()); },
  presence() { return JSON.parse(native.presence()); },
  setTimer(name, delayMs, payload) {
    timerName(name);
    if (typeof delayMs !== "number" || !Number.isFinite(delayMs) || delayMs < MIN_DELAY_MS)
      throw new RangeError(`timer delay must be a number of milliseconds, at least ${MIN_DELAY_MS}`);
    if (!timers.has(name) && timers.size >= MAX_TIMERS)
      throw new RangeError(`a room may have at most ${MAX_TIMERS} timers`);
    const at = clock + Math.ceil(delayMs);
    timers.set(name, { at, payload: payloadJson(payload) });
    timerSet(name, at);
  },
  clearTimer(name) {
    const cleared = timers.delete(String(name));
    if (cleared) timerGone(String(name));
    return cleared;
  },
  timers() {
    return Array.from(timers, ([name, t]) => ({ name, at: t.at }))
      .sort((x, y) => x.at - y.at || (x.name < y.name ? -1 : x.name > y.name ? 1 : 0));
  },
  kick(connId, reason) {
    const id = String(connId);
    if (!members.has(id)) return false;
    native.kick(id, reason === undefined ? "kicked" : String(reason).slice(0, 1000));
    return true;
  },
  send(topic, event, payload) {
    if (typeof topic !== "string") throw new TypeError("room.send needs a topic string");
    const refused = native.send(topic, eventName(event), payloadJson(payload));
    if (refused) throw new TypeError(`room.send: ${refused}`);
  },
});
Object.defineProperty(globalThis, "room", { value: room, enumerable: true });

// --- the host's entry points ----------------------------------------------
let hooks = null;
let settled = null;
function makeConn(id, user, metaJson) {
  return Object.freeze({ id, user, meta: Object.freeze(JSON.parse(metaJson)) });
}
function reply(value) {
  if (value !== null && typeof value === "object" && typeof value.then === "function") {
    // An async hook: the host runs pending jobs, then asks `settle()`.
    settled = { done: false };
    value.then(
      (v) => { settled = { done: true, ok: true, value: v }; },
      (e) => { settled = { done: true, ok: false, error: e }; },
    );
    return undefined;
  }
  // Bytes go back to the host as they are (a binary reply).
  if (isBytes(value)) return value;
  const json = JSON.stringify(value === undefined ? {} : value);
  if (json === undefined) throw new TypeError("hook result must be JSON-serializable");
  return json;
}
Object.defineProperty(globalThis, "__roomhost", {
  enumerable: false,
  value: Object.freeze({
    bind(namespace) {
      if (typeof namespace.onMessage !== "function")
        throw new TypeError("a room script must export function onMessage(conn, event, payload)");
      for (const name of ["onJoin", "onLeave", "onTimer", "onRequest", "snapshot", "restore"]) {
        if (namespace[name] !== undefined && typeof namespace[name] !== "function")
          throw new TypeError(`export ${name} must be a function`);
      }
      if ((namespace.snapshot === undefined) !== (namespace.restore === undefined))
        throw new TypeError("export both snapshot() and restore(state), or neither");
      if (namespace.readOnlyJoins !== undefined && typeof namespace.readOnlyJoins !== "boolean")
        throw new TypeError("export readOnlyJoins must be true or false");
      hooks = namespace;
      // What the host needs to know of the exports, as bits.
      return (typeof hooks.snapshot === "function" ? 1 : 0) | (hooks.readOnlyJoins === true ? 2 : 0)
        | (typeof hooks.onRequest === "function" ? 4 : 0);
    },
    at(time, hi, lo) { clock = time; seedHi = hi; seedLo = lo; seeded = false; },
    call(hook, id, user, metaJson, arg1, arg2) {
      const conn = members.get(id) ?? makeConn(id, user, metaJson);
      switch (hook) {
        case "join":
          members.set(id, conn);
          return reply(hooks.onJoin ? hooks.onJoin(conn, JSON.parse(arg1)) : undefined);
        case "message":
          return reply(hooks.onMessage(conn, arg1, JSON.parse(arg2)));
        case "binary":
          // arg2 is a Uint8Array the host made for this call.
          return reply(hooks.onMessage(conn, arg1, arg2));
        case "leave":
          members.delete(id);
          return reply(hooks.onLeave ? hooks.onLeave(conn, arg1) : undefined);
        case "drop":
          // A leave whose onLeave threw: membership still changes.
          members.delete(id);
          return "{}";
        case "timer": {
          const timer = timers.get(arg1);
          if (timer === undefined) return "{}";
          timers.delete(arg1);
          timerGone(arg1);
          return reply(hooks.onTimer ? hooks.onTimer(arg1, JSON.parse(timer.payload), JSON.parse(arg2)) : undefined);
        }
        case "timer_drop":
          // A firing whose onTimer threw: the timer is gone all the same.
          if (timers.delete(arg1)) timerGone(arg1);
          return "{}";
        case "request":
          if (!hooks.onRequest) throw new Error("this room kind has no onRequest");
          return reply(hooks.onRequest(Object.freeze(JSON.parse(arg1))));
        default:
          throw new Error(`unknown hook ${hook}`);
      }
    },
    settle() {
      const s = settled;
      settled = null;
      if (!s || !s.done) throw new Error("async hook did not settle within its event");
      if (!s.ok) throw s.error;
      return reply(s.value);
    },
    snapshot() {
      const state = {
        members: Array.from(members.values(), (c) => [c.id, c.user, JSON.stringify(c.meta)]),
        timers: Array.from(timers, ([name, t]) => [name, t.at, t.payload]),
      };
      const json = hooks.snapshot ? JSON.stringify(hooks.snapshot()) : undefined;
      return JSON.stringify(state).slice(0, -1) + `,"state":${json ?? "null"}}`;
    },
    restore(json) {
      const saved = JSON.parse(json);
      members.clear();
      for (const [id, user, meta] of saved.members) members.set(id, makeConn(id, user, meta));
      timers.clear();
      for (const [name, at, payload] of saved.timers ?? []) timers.set(name, { at, payload });
      findNextTimer();
      if (saved.state !== null && hooks.restore) hooks.restore(saved.state);
    },
    members() { return JSON.stringify(Array.from(members.keys())); },
  }),
});
