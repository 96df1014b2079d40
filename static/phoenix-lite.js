// phoenix-lite.js — a small Phoenix Channels client for the roomhost UI.
//
// It speaks the V2 JSON serializer (`[join_ref, ref, topic, event, payload]`)
// and keeps the behaviour of phoenix.js that a chat page relies on: heartbeats,
// reconnect with backoff, join/rejoin with join_ref, pushes with reply callbacks
// and timeouts, buffering while not joined, dropping frames of outdated joins.
// The transport sits behind a tiny interface (see WebSocketTransport and
// ./phoenix-longpoll.js) so the socket never cares how frames travel.
// No build step, no dependencies: load it as an ES module.

import { LongPollTransport } from "./phoenix-longpoll.js";
export { LongPollTransport } from "./phoenix-longpoll.js";
export { Presence } from "./phoenix-presence.js";

export const DEFAULT_TIMEOUT = 10000;
export const HEARTBEAT_INTERVAL_MS = 30000;
const RECONNECT_STEPS_MS = [10, 50, 100, 150, 200, 250, 500, 1000, 2000, 5000];
const REJOIN_STEPS_MS = [1000, 2000, 5000, 10000];
// Lifecycle events of a channel; like phoenix.js we drop any frame whose
// join_ref is not the current join, which matters above all for these.
const EVENTS = { join: "phx_join", reply: "phx_reply", error: "phx_error", close: "phx_close", leave: "phx_leave" };

const stepper = (steps) => (tries) => steps[Math.min(tries, steps.length) - 1];

/** Calls `callback` after a delay that grows with each consecutive try. */
class Backoff {
  constructor(callback, delayForTry) {
    this.callback = callback;
    this.delayForTry = delayForTry;
    this.tries = 0;
    this.timer = null;
  }
  reset() {
    this.tries = 0;
    clearTimeout(this.timer);
    this.timer = null;
  }
  schedule() {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      this.tries += 1;
      this.callback();
    }, this.delayForTry(this.tries + 1));
  }
  /** Stops a scheduled call but keeps counting tries (they reset on success). */
  cancel() {
    clearTimeout(this.timer);
    this.timer = null;
  }
}

/**
 * The transport interface: `new T(url, options)`, then the socket sets the
 * handlers `onopen()`, `onmessage(text)`, `onerror(error)` and
 * `onclose({code, reason, wasClean})`; it calls `send(text)` and
 * `close(code, reason)`. `skipHeartbeat` says whether the socket should run
 * heartbeats over it. Each transport instance is one connection attempt.
 */
export class WebSocketTransport {
  static kind = "websocket";
  constructor(url, { WebSocket: Impl = globalThis.WebSocket } = {}) {
    this.skipHeartbeat = false;
    this.onopen = this.onmessage = this.onerror = this.onclose = () => {};
    this.ws = new Impl(url);
    this.ws.onopen = () => this.onopen();
    this.ws.onmessage = (event) => this.onmessage(String(event.data));
    this.ws.onerror = (event) => this.onerror(event);
    this.ws.onclose = (event) => this.onclose({ code: event.code, reason: event.reason, wasClean: event.wasClean });
  }
  send(text) { this.ws.send(text); }
  close(code = 1000, reason = "") {
    try { this.ws.close(code, reason); } catch { this.ws.close(); }
  }
}

const TRANSPORTS = { websocket: WebSocketTransport, longpoll: LongPollTransport };

/** One pushed event waiting for its `phx_reply` (or its timeout). */
export class Push {
  constructor(channel, event, payload, timeout) {
    this.channel = channel;
    this.event = event;
    this.payload = payload;
    this.timeout = timeout;
    this.ref = null;
    this.receivedResp = null;
    this.timeoutTimer = null;
    this.hooks = [];
  }

  /** Registers a callback for "ok", "error" or "timeout"; chainable. */
  receive(status, callback) {
    if (this.receivedResp && this.receivedResp.status === status) callback(this.receivedResp.response);
    this.hooks.push({ status, callback });
    return this;
  }

  send() {
    if (this.receivedResp && this.receivedResp.status === "timeout") return;
    this.startTimeout();
    this.channel.socket.push({
      joinRef: this.channel.joinRef(), ref: this.ref, topic: this.channel.topic,
      event: this.event, payload: this.payload,
    }, this.channel);
  }

  resend(timeout) {
    this.timeout = timeout;
    this.reset();
    this.send();
  }

  reset() {
    this.cancelTimeout();
    this.channel.pendingReplies.delete(this.ref);
    this.ref = null;
    this.receivedResp = null;
  }

  /** Takes a fresh ref and arms the timeout; replies to older refs are ignored. */
  startTimeout() {
    this.cancelTimeout();
    this.channel.pendingReplies.delete(this.ref);
    this.ref = this.channel.socket.makeRef();
    this.channel.pendingReplies.set(this.ref, this);
    this.timeoutTimer = setTimeout(() => this.settle("timeout", {}), this.timeout);
  }

  cancelTimeout() {
    clearTimeout(this.timeoutTimer);
    this.timeoutTimer = null;
  }

  settle(status, response) {
    this.cancelTimeout();
    this.channel.pendingReplies.delete(this.ref);
    this.receivedResp = { status, response };
    for (const hook of this.hooks) if (hook.status === status) hook.callback(response);
  }
}

/** One topic membership over the socket (Phoenix's Channel). */
export class Channel {
  constructor(topic, params, socket) {
    this.topic = topic;
    this.params = params || {};
    this.socket = socket;
    this.state = "closed"; // closed | joining | joined | errored | leaving
    this.timeout = socket.timeout;
    this.bindings = [];
    this.bindingRef = 0;
    this.joinedOnce = false;
    this.pushBuffer = [];
    this.pendingReplies = new Map(); // ref -> Push
    this.joinPush = new Push(this, EVENTS.join, this.params, this.timeout);
    this.rejoinTimer = new Backoff(() => { if (socket.isConnected()) this.rejoin(); }, socket.rejoinAfterMs);

    this.joinPush
      .receive("ok", () => {
        this.state = "joined";
        this.rejoinTimer.reset();
        const buffered = this.pushBuffer;
        this.pushBuffer = [];
        for (const push of buffered) push.send();
      })
      .receive("error", () => {
        // Refused joins retry with backoff too (the room may come back, the
        // script may be fixed); the app sees each refusal through joinPush.
        this.state = "errored";
        if (socket.isConnected()) this.rejoinTimer.schedule();
      })
      .receive("timeout", () => {
        // Tell the server to drop the half-made join, then try again.
        if (socket.isConnected()) {
          socket.push({ joinRef: this.joinRef(), ref: socket.makeRef(), topic, event: EVENTS.leave, payload: {} }, null);
        }
        this.state = "errored";
        this.joinPush.reset();
        if (socket.isConnected()) this.rejoinTimer.schedule();
      });

    this.on(EVENTS.close, () => {
      this.rejoinTimer.reset();
      this.pushBuffer = [];
      this.state = "closed";
      socket.remove(this);
    });
    this.on(EVENTS.error, () => {
      if (this.state === "leaving" || this.state === "closed") return;
      if (this.state === "joining") this.joinPush.reset();
      this.state = "errored";
      if (socket.isConnected()) this.rejoinTimer.schedule();
    });
  }

  /** Starts joining; returns the join Push (its hooks fire on every (re)join). */
  join(timeout = this.timeout) {
    if (this.joinedOnce) throw new Error(`join can only be called once per channel (${this.topic})`);
    this.timeout = timeout;
    this.joinedOnce = true;
    this.rejoin();
    return this.joinPush;
  }

  rejoin(timeout = this.timeout) {
    // A channel that left or was closed by the server is done for good.
    if (this.state === "leaving" || !this.socket.channels.includes(this)) return;
    this.state = "joining";
    this.joinPush.resend(timeout);
  }

  /** Binds `callback(payload, ref, joinRef)` to an event; returns a ref for off(). */
  on(event, callback) {
    const ref = this.bindingRef++;
    this.bindings.push({ event, ref, callback });
    return ref;
  }

  off(event, ref) {
    this.bindings = this.bindings.filter((b) => !(b.event === event && (ref === undefined || ref === b.ref)));
  }

  onError(callback) { return this.on(EVENTS.error, callback); }
  onClose(callback) { return this.on(EVENTS.close, callback); }

  canPush() { return this.socket.isConnected() && this.state === "joined"; }

  /** Pushes an event; buffered (with its timeout running) until joined. */
  push(event, payload = {}, timeout = this.timeout) {
    if (!this.joinedOnce) throw new Error(`push '${event}' to '${this.topic}' before join()`);
    const push = new Push(this, event, payload, timeout);
    if (this.canPush()) {
      push.send();
    } else {
      push.startTimeout();
      this.pushBuffer.push(push);
    }
    return push;
  }

  /** Leaves the topic. Like phoenix.js the channel closes locally at once; the leave still goes out. */
  leave(timeout = this.timeout) {
    this.rejoinTimer.reset();
    this.joinPush.cancelTimeout();
    this.state = "leaving";
    const close = () => this.trigger(EVENTS.close, { reason: "leave" });
    const push = new Push(this, EVENTS.leave, {}, timeout);
    push.receive("ok", close).receive("timeout", close);
    push.send();
    push.settle("ok", {});
    return push;
  }

  joinRef() { return this.joinPush.ref; }

  isMember(topic, joinRef) {
    if (topic !== this.topic) return false;
    if (joinRef && joinRef !== this.joinRef()) {
      this.socket.log("channel", "dropping frame of an outdated join", { topic, joinRef });
      return false;
    }
    return true;
  }

  trigger(event, payload, ref, joinRef) {
    if (event === EVENTS.reply) {
      const push = this.pendingReplies.get(ref);
      if (push) push.settle(payload && payload.status, payload && payload.response);
      return;
    }
    for (const binding of this.bindings.filter((b) => b.event === event)) {
      binding.callback(payload, ref, joinRef || this.joinRef());
    }
  }
}

/**
 * The connection to `/socket`: owns the transport, heartbeats, reconnects and
 * the list of channels. Options: params (object or function), transport
 * ("websocket" | "longpoll"), longPollFallbackMs (fall back to long-poll when
 * the WebSocket cannot open), webSocketProbeMs (while on long-poll as a
 * fallback, try the WebSocket again after this long, doubling up to 60 s;
 * default 5000), timeout, heartbeatIntervalMs, reconnectAfterMs,
 * rejoinAfterMs, longpollerTimeout, logger, WebSocket and fetch (for Node).
 *
 * The fallback is not for good: an outage that outlasts a WebSocket attempt
 * lands the socket on long-poll when the server comes back, and the probe
 * moves it back to the WebSocket (the channels rejoin) once one opens.
 */
export class Socket {
  constructor(endPoint, opts = {}) {
    this.endPoint = endPoint.replace(/\/$/, "");
    this.params = opts.params || {};
    this.timeout = opts.timeout || DEFAULT_TIMEOUT;
    this.heartbeatIntervalMs = opts.heartbeatIntervalMs || HEARTBEAT_INTERVAL_MS;
    this.reconnectAfterMs = opts.reconnectAfterMs || stepper(RECONNECT_STEPS_MS);
    this.rejoinAfterMs = opts.rejoinAfterMs || stepper(REJOIN_STEPS_MS);
    this.longpollerTimeout = opts.longpollerTimeout || 20000;
    this.longPollFallbackMs = opts.longPollFallbackMs || 0;
    this.transportName = opts.transport === "longpoll" ? "longpoll" : "websocket";
    this.transportOptions = { WebSocket: opts.WebSocket, fetch: opts.fetch, timeout: this.longpollerTimeout };
    this.logger = opts.logger || null;
    this.channels = [];
    this.sendBuffer = [];
    this.ref = 0;
    this.conn = null; // the current transport instance, or null
    this.connOpen = false;
    this.closeWasClean = true;
    this.everOpened = false;
    this.status = "closed"; // connecting | open | reconnecting | closed
    this.callbacks = { open: [], close: [], error: [], message: [], status: [] };
    this.pendingHeartbeatRef = null;
    this.heartbeatTimer = null;
    this.heartbeatTimeoutTimer = null;
    this.fallbackTimer = null;
    this.webSocketProbeMs = opts.webSocketProbeMs || 5000;
    this.probe = null; // { timer, transport, tries } while probing from long-poll
    this.reconnectTimer = new Backoff(() => this.connect(), this.reconnectAfterMs);
  }

  log(kind, msg, data) { if (this.logger) this.logger(kind, msg, data); }

  onOpen(cb) { this.callbacks.open.push(cb); }
  onClose(cb) { this.callbacks.close.push(cb); }
  onError(cb) { this.callbacks.error.push(cb); }
  onMessage(cb) { this.callbacks.message.push(cb); }
  /** `cb(status)` with status connecting | open | reconnecting | closed. */
  onStatus(cb) { this.callbacks.status.push(cb); }

  /** Consecutive connection attempts that failed (0 once connected). */
  get failedAttempts() { return this.reconnectTimer.tries; }

  setStatus(status, { always = false } = {}) {
    if (this.status === status && !always) return;
    this.status = status;
    for (const cb of this.callbacks.status) cb(status);
  }

  isConnected() { return this.conn !== null && this.connOpen; }

  makeRef() {
    this.ref = this.ref >= Number.MAX_SAFE_INTEGER ? 1 : this.ref + 1;
    return String(this.ref);
  }

  endPointURL(transportName) {
    const params = typeof this.params === "function" ? this.params() : this.params;
    const query = new URLSearchParams({ ...params, vsn: "2.0.0" });
    let url = `${this.endPoint}/${transportName}?${query}`;
    const http = transportName === "longpoll";
    if (url.startsWith("//")) url = `${http ? location.protocol : location.protocol.replace("http", "ws")}${url}`;
    else if (url.startsWith("/")) url = `${http ? location.protocol : location.protocol.replace("http", "ws")}//${location.host}${url}`;
    return http ? url.replace(/^ws/, "http") : url.replace(/^http/, "ws");
  }

  /** Opens a connection unless one is open or opening. */
  connect() {
    if (this.conn) return;
    this.closeWasClean = false;
    this.reconnectTimer.cancel();
    this.setStatus(this.everOpened || this.reconnectTimer.tries > 0 ? "reconnecting" : "connecting");
    const name = this.transportName;
    const conn = new TRANSPORTS[name](this.endPointURL(name), this.transportOptions);
    this.conn = conn;
    this.connOpen = false;
    this.log("transport", `connecting over ${name}`);
    // Each handler checks that its transport is still the current one, so
    // late events from an abandoned connection can never touch the socket.
    conn.onopen = () => { if (this.conn === conn) this.onConnOpen(); };
    conn.onmessage = (text) => { if (this.conn === conn) this.onConnMessage(text); };
    conn.onerror = (error) => { if (this.conn === conn) this.onConnError(error); };
    conn.onclose = (event) => { if (this.conn === conn) this.onConnClose(event); };
    if (this.longPollFallbackMs && name === "websocket") {
      clearTimeout(this.fallbackTimer);
      this.fallbackTimer = setTimeout(() => {
        if (this.conn === conn && !this.connOpen) this.abandon(conn, "websocket did not open in time");
      }, this.longPollFallbackMs);
    }
  }

  /** Closes for good (until connect() is called again); channels rejoin on the next connect. */
  disconnect(callback, code = 1000, reason = "") {
    this.closeWasClean = true;
    this.reconnectTimer.reset();
    clearTimeout(this.fallbackTimer);
    this.stopProbe();
    this.clearHeartbeats();
    const conn = this.conn;
    const wasOpen = this.connOpen;
    this.conn = null;
    this.connOpen = false;
    if (conn) conn.close(code, reason);
    if (wasOpen) this.triggerChanError("disconnected");
    this.setStatus("closed");
    if (conn) for (const cb of this.callbacks.close) cb({ code, reason, wasClean: true });
    if (callback) callback();
  }

  onConnOpen() {
    this.log("transport", `connected over ${this.transportName}`);
    clearTimeout(this.fallbackTimer);
    this.connOpen = true;
    this.everOpened = true;
    this.reconnectTimer.reset();
    this.setStatus("open");
    this.flushSendBuffer();
    this.resetHeartbeat();
    if (this.transportName === "longpoll" && this.longPollFallbackMs) this.scheduleProbe(this.conn, 0);
    for (const cb of this.callbacks.open) cb();
    for (const channel of this.channels) {
      channel.rejoinTimer.reset();
      if (channel.state === "errored") channel.rejoin();
    }
  }

  onConnError(error) {
    this.log("transport", "error", error);
    for (const cb of this.callbacks.error) cb(error);
  }

  onConnClose(event) {
    this.log("transport", "close", event);
    this.afterConnLost(this.conn, event);
  }

  /** Gives up on a connection we no longer trust (heartbeat missed, fallback timer). */
  abandon(conn, reason) {
    this.log("transport", `abandoning connection: ${reason}`);
    // Detach first: the close event this causes must not be handled twice.
    this.afterConnLost(conn, { code: 1000, reason, wasClean: false });
    conn.close(1000, reason);
  }

  /**
   * While `lpConn` (a long-poll fallback) is the connection, opens a
   * WebSocket now and then; the first that opens is closed again and the
   * socket reconnects over the WebSocket.
   */
  scheduleProbe(lpConn, tries) {
    this.stopProbe();
    const delay = Math.min(this.webSocketProbeMs * 2 ** tries, 60000);
    const probe = { timer: null, transport: null, tries };
    this.probe = probe;
    probe.timer = setTimeout(() => {
      if (this.probe !== probe || this.conn !== lpConn || !this.connOpen) return;
      let opened = false;
      const transport = new WebSocketTransport(this.endPointURL("websocket"), this.transportOptions);
      probe.transport = transport;
      const failed = () => {
        if (opened || this.probe !== probe) return;
        probe.transport = null;
        transport.close();
        if (this.conn === lpConn && this.connOpen) this.scheduleProbe(lpConn, tries + 1);
      };
      transport.onopen = () => {
        opened = true;
        transport.close(1000, "probe");
        if (this.probe !== probe || this.conn !== lpConn) return;
        this.probe = null;
        this.log("transport", "the websocket opens again: leaving long-poll");
        this.transportName = "websocket";
        this.leaveLongPoll(lpConn);
      };
      transport.onclose = failed;
      transport.onerror = failed;
      probe.timer = setTimeout(failed, this.longPollFallbackMs);
    }, delay);
  }

  /**
   * Moves off a long-poll session that still works: the socket lets go of
   * it at once (and reconnects over the WebSocket), and its channels leave
   * over it, so the server drops them now rather than when the session
   * expires (presence would show the tab twice until then).
   */
  leaveLongPoll(lpConn) {
    const joined = this.channels.filter((c) => c.state === "joined").map((c) => [c.joinRef(), c.topic]);
    this.afterConnLost(lpConn, { code: 1000, reason: "moving back to the websocket", wasClean: false });
    for (const [joinRef, topic] of joined) {
      lpConn.send(JSON.stringify([joinRef, this.makeRef(), topic, EVENTS.leave, {}]));
    }
    // The leaves go out as one POST; closing sooner would abort it.
    setTimeout(() => lpConn.close(1000, "moved to the websocket"), 1000);
  }

  stopProbe() {
    if (!this.probe) return;
    clearTimeout(this.probe.timer);
    if (this.probe.transport) this.probe.transport.close();
    this.probe = null;
  }

  afterConnLost(conn, event) {
    const wasOpen = this.connOpen;
    this.conn = null;
    this.connOpen = false;
    clearTimeout(this.fallbackTimer);
    this.stopProbe();
    this.clearHeartbeats();
    // A transport that never opened gets swapped for the other one when the
    // fallback is on; once one opens, reconnects keep using it.
    if (!wasOpen && this.longPollFallbackMs) {
      this.transportName = this.transportName === "websocket" ? "longpoll" : "websocket";
      this.log("transport", `falling back to ${this.transportName}`);
    }
    this.triggerChanError(wasOpen ? "connection closed" : "connection failed");
    for (const cb of this.callbacks.close) cb(event);
    if (!this.closeWasClean && this.conn === null) {
      this.reconnectTimer.schedule();
      // Told on every failed attempt, so the page can tell "offline" apart.
      this.setStatus("reconnecting", { always: true });
    }
  }

  triggerChanError(reason) {
    for (const channel of [...this.channels]) {
      if (channel.state === "joined" || channel.state === "joining") {
        channel.trigger(EVENTS.error, { source: "transport", reason });
      }
    }
  }

  resetHeartbeat() {
    this.clearHeartbeats();
    if (this.conn && this.conn.skipHeartbeat) return;
    this.heartbeatTimer = setTimeout(() => this.sendHeartbeat(), this.heartbeatIntervalMs);
  }

  clearHeartbeats() {
    clearTimeout(this.heartbeatTimer);
    clearTimeout(this.heartbeatTimeoutTimer);
    this.pendingHeartbeatRef = null;
  }

  sendHeartbeat() {
    if (!this.isConnected()) return;
    const conn = this.conn;
    this.pendingHeartbeatRef = this.makeRef();
    this.push({ joinRef: null, ref: this.pendingHeartbeatRef, topic: "phoenix", event: "heartbeat", payload: {} }, null);
    this.heartbeatTimeoutTimer = setTimeout(() => {
      if (this.pendingHeartbeatRef && this.conn === conn) this.abandon(conn, "heartbeat timeout");
    }, this.heartbeatIntervalMs);
  }

  channel(topic, params = {}) {
    const channel = new Channel(topic, params, this);
    this.channels.push(channel);
    return channel;
  }

  remove(channel) {
    this.channels = this.channels.filter((c) => c !== channel);
  }

  /** Sends a frame now, or when connected if the channel's join is still current then. */
  push(frame, channel) {
    const send = () => {
      if (channel && frame.event !== EVENTS.leave && (frame.joinRef !== channel.joinRef() || channel.state === "closed")) return;
      this.conn.send(JSON.stringify([frame.joinRef, frame.ref, frame.topic, frame.event, frame.payload]));
    };
    if (this.isConnected()) send();
    else this.sendBuffer.push(send);
  }

  flushSendBuffer() {
    const buffered = this.sendBuffer;
    this.sendBuffer = [];
    for (const send of buffered) if (this.isConnected()) send();
  }

  onConnMessage(text) {
    let frame;
    try { frame = JSON.parse(text); } catch { frame = null; }
    if (!Array.isArray(frame) || frame.length !== 5) {
      this.log("receive", "ignoring a frame that is not a V2 array", text);
      return;
    }
    const [joinRef, ref, topic, event, payload] = frame;
    if (ref && ref === this.pendingHeartbeatRef) this.resetHeartbeat();
    this.log("receive", `${topic} ${event}`, payload);
    for (const channel of [...this.channels]) {
      if (channel.isMember(topic, joinRef)) channel.trigger(event, payload, ref, joinRef);
    }
    for (const cb of this.callbacks.message) cb({ joinRef, ref, topic, event, payload });
  }
}
