// message-log.js — the messages a chat tab shows, deduplicated by id.
//
// History from a (re)join overlaps what is already shown and live messages
// may race the join reply, so every message goes through one map keyed by id
// and the view is always the same total order: by numeric id when ids are
// numbers (the room assigns them in broadcast order), else by time.

const MAX_KEPT = 500;

export function compareMessages(a, b) {
  if (typeof a.id === "number" && typeof b.id === "number") return a.id - b.id;
  return (a.at ?? 0) - (b.at ?? 0) || String(a.id).localeCompare(String(b.id));
}

function isMessage(msg) {
  return msg && typeof msg === "object" && msg.id !== undefined && msg.id !== null;
}

export class MessageLog {
  constructor() {
    this.byId = new Map();
    this.sorted = [];
  }

  get size() { return this.sorted.length; }
  get last() { return this.sorted[this.sorted.length - 1]; }
  has(id) { return this.byId.has(String(id)); }

  /**
   * Adds one message. Returns "append" when it goes at the end (the common
   * case, cheap to render), "insert" when it lands in the middle, or null
   * when it was already there.
   */
  add(msg) {
    if (!isMessage(msg) || this.has(msg.id)) return null;
    const last = this.last;
    this.byId.set(String(msg.id), msg);
    if (!last || compareMessages(last, msg) < 0) {
      this.sorted.push(msg);
      this.trim();
      return "append";
    }
    this.sorted.push(msg);
    this.sorted.sort(compareMessages);
    this.trim();
    return "insert";
  }

  /** Merges a join reply's history (it wins for ids seen before). */
  merge(history) {
    for (const msg of Array.isArray(history) ? history : []) {
      if (isMessage(msg)) this.byId.set(String(msg.id), msg);
    }
    this.sorted = [...this.byId.values()].sort(compareMessages);
    this.trim();
  }

  clear() {
    this.byId.clear();
    this.sorted = [];
  }

  trim() {
    while (this.sorted.length > MAX_KEPT) this.byId.delete(String(this.sorted.shift().id));
  }
}
