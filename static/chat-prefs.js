// chat-prefs.js — what the chat page remembers and how it names things:
// the user's handle, the recent rooms (both in localStorage) and the rules
// for a topic. Storage may be unavailable (private mode, quotas): everything
// here degrades to in-memory values instead of throwing.

const HANDLE_KEY = "roomhost.handle";
const RECENT_KEY = "roomhost.recentRooms";
const MAX_RECENT = 8;
export const DEFAULT_TOPIC = "chat:lobby";
export const MAX_HANDLE = 32;

// The server's rule (DESIGN.md): kind:name.
const TOPIC_RE = /^[a-z][a-z0-9_-]{0,31}:[A-Za-z0-9_.~-]{1,64}$/;

const ADJECTIVES = ["swift", "calm", "brave", "quiet", "lucky", "sunny", "clever", "gentle", "bold", "merry", "nimble", "witty"];
const ANIMALS = ["otter", "heron", "lynx", "panda", "fox", "koala", "falcon", "badger", "dolphin", "wren", "moose", "gecko"];

function storageGet(key) {
  try { return localStorage.getItem(key); } catch { return null; }
}
function storageSet(key, value) {
  try { localStorage.setItem(key, value); } catch { /* not remembered, still works */ }
}

const pick = (list) => list[Math.floor(Math.random() * list.length)];

export function randomHandle() {
  return `${pick(ADJECTIVES)}-${pick(ANIMALS)}-${Math.floor(Math.random() * 90) + 10}`;
}

/** Trims and tidies a typed handle; returns null when nothing usable is left. */
export function cleanHandle(raw) {
  const handle = String(raw ?? "").trim().replace(/\s+/g, "-").slice(0, MAX_HANDLE);
  return handle.length > 0 ? handle : null;
}

/** The remembered handle, or a new random one (remembered from now on). */
export function loadHandle() {
  const saved = cleanHandle(storageGet(HANDLE_KEY));
  if (saved) return saved;
  const handle = randomHandle();
  storageSet(HANDLE_KEY, handle);
  return handle;
}

export function saveHandle(handle) { storageSet(HANDLE_KEY, handle); }

/**
 * Turns what the user typed into a topic: "general" means "chat:general".
 * Returns `{topic}` or `{error}` with a sentence for the user.
 */
export function parseTopic(raw) {
  let text = String(raw ?? "").trim();
  if (text === "") return { error: "Type a room name, for example chat:lobby." };
  if (!text.includes(":")) text = `chat:${text}`;
  if (!TOPIC_RE.test(text)) {
    return { error: "A room is kind:name — kind is lowercase letters, digits, _ or - (starting with a letter); name is letters, digits, _ . ~ or - (at most 64)." };
  }
  return { topic: text };
}

export function recentRooms() {
  try {
    const list = JSON.parse(storageGet(RECENT_KEY) || "[]");
    return Array.isArray(list) ? list.filter((t) => typeof t === "string" && TOPIC_RE.test(t)).slice(0, MAX_RECENT) : [];
  } catch {
    return [];
  }
}

/** Moves `topic` to the front of the recent rooms; returns the new list. */
export function rememberRoom(topic) {
  const list = [topic, ...recentRooms().filter((t) => t !== topic)].slice(0, MAX_RECENT);
  storageSet(RECENT_KEY, JSON.stringify(list));
  return list;
}

/** The room named in the page URL (`?room=` or `#room=`), if any. */
export function topicFromLocation(loc = location) {
  const fromQuery = new URLSearchParams(loc.search).get("room");
  const fromHash = new URLSearchParams(loc.hash.replace(/^#/, "")).get("room");
  return fromQuery || fromHash || null;
}

/** The page URL for `topic`, keeping the other query parameters (e.g. transport). */
export function urlForTopic(topic, loc = location) {
  const params = new URLSearchParams(loc.search);
  params.delete("room");
  const rest = params.toString();
  // Colons are legal in a query; keep them readable.
  return `${loc.pathname}?room=${encodeURIComponent(topic).replace(/%3A/gi, ":")}${rest ? `&${rest}` : ""}`;
}
