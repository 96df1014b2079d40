// phoenix-presence.js — Phoenix Presence, client side.
//
// The same algorithm and shapes as phoenix.js `Presence`: state is
// `{ key: { metas: [{ phx_ref, ... }] } }`; `presence_state` replaces it,
// `presence_diff` `{ joins, leaves }` patches it (a meta update arrives as a
// leave of the old meta plus a join of the new one). Keys are chosen by the
// server, so every map indexed by key has no prototype ("__proto__" is a fine
// user name here).

const clone = (value) => JSON.parse(JSON.stringify(value));

function nullProto(obj) {
  if (Object.getPrototypeOf(obj) === null) return obj;
  const out = Object.create(null);
  for (const key of Object.getOwnPropertyNames(obj)) out[key] = obj[key];
  return out;
}

const each = (obj, fn) => Object.getOwnPropertyNames(obj).map((key) => fn(key, obj[key]));
const noop = () => {};

export class Presence {
  /**
   * Tracks presence on a channel. Diffs that arrive before the state of the
   * current join are held back and applied after it, as phoenix.js does.
   */
  constructor(channel, opts = {}) {
    const events = opts.events || { state: "presence_state", diff: "presence_diff" };
    this.state = Object.create(null);
    this.pendingDiffs = [];
    this.channel = channel;
    this.joinRef = null;
    this.caller = { onJoin: noop, onLeave: noop, onSync: noop };

    channel.on(events.state, (newState) => {
      const { onJoin, onLeave, onSync } = this.caller;
      this.joinRef = channel.joinRef();
      this.state = Presence.syncState(this.state, newState, onJoin, onLeave);
      for (const diff of this.pendingDiffs) this.state = Presence.syncDiff(this.state, diff, onJoin, onLeave);
      this.pendingDiffs = [];
      onSync();
    });

    channel.on(events.diff, (diff) => {
      const { onJoin, onLeave, onSync } = this.caller;
      if (this.inPendingSyncState()) {
        this.pendingDiffs.push(diff);
      } else {
        this.state = Presence.syncDiff(this.state, diff, onJoin, onLeave);
        onSync();
      }
    });
  }

  onJoin(callback) { this.caller.onJoin = callback; }
  onLeave(callback) { this.caller.onLeave = callback; }
  onSync(callback) { this.caller.onSync = callback; }
  list(chooser) { return Presence.list(this.state, chooser); }
  inPendingSyncState() { return !this.joinRef || this.joinRef !== this.channel.joinRef(); }

  /** Replaces `currentState` with `newState`, reporting what joined and left. */
  static syncState(currentState, newState, onJoin, onLeave) {
    const state = nullProto(clone(currentState));
    newState = nullProto(newState);
    const joins = Object.create(null);
    const leaves = Object.create(null);

    each(state, (key, presence) => {
      if (!newState[key]) leaves[key] = presence;
    });
    each(newState, (key, newPresence) => {
      const currentPresence = state[key];
      if (!currentPresence) {
        joins[key] = newPresence;
        return;
      }
      const newRefs = newPresence.metas.map((m) => m.phx_ref);
      const curRefs = currentPresence.metas.map((m) => m.phx_ref);
      const joinedMetas = newPresence.metas.filter((m) => !curRefs.includes(m.phx_ref));
      const leftMetas = currentPresence.metas.filter((m) => !newRefs.includes(m.phx_ref));
      if (joinedMetas.length > 0) joins[key] = { ...newPresence, metas: joinedMetas };
      if (leftMetas.length > 0) leaves[key] = { ...clone(currentPresence), metas: leftMetas };
    });
    return Presence.syncDiff(state, { joins, leaves }, onJoin, onLeave);
  }

  /** Applies one `{joins, leaves}` diff. */
  static syncDiff(state, diff, onJoin = noop, onLeave = noop) {
    state = nullProto(state);
    const { joins, leaves } = clone(diff);

    each(joins || {}, (key, newPresence) => {
      const currentPresence = state[key];
      state[key] = clone(newPresence);
      if (currentPresence) {
        const joinedRefs = state[key].metas.map((m) => m.phx_ref);
        const curMetas = currentPresence.metas.filter((m) => !joinedRefs.includes(m.phx_ref));
        state[key].metas.unshift(...curMetas);
      }
      onJoin(key, currentPresence, newPresence);
    });
    each(leaves || {}, (key, leftPresence) => {
      const currentPresence = state[key];
      if (!currentPresence) return;
      const refsToRemove = leftPresence.metas.map((m) => m.phx_ref);
      currentPresence.metas = currentPresence.metas.filter((m) => !refsToRemove.includes(m.phx_ref));
      onLeave(key, currentPresence, leftPresence);
      if (currentPresence.metas.length === 0) delete state[key];
    });
    return state;
  }

  /** `[chooser(key, presence)]` for every key; the presence itself by default. */
  static list(presences, chooser = (key, presence) => presence) {
    return each(presences, (key, presence) => chooser(key, presence));
  }
}
