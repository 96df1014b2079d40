// phoenix-longpoll.js — the Phoenix long-poll transport, for browsers or
// networks where a WebSocket cannot connect.
//
// Protocol (as Phoenix.Transports.LongPoll and phoenix.js speak it):
// - GET  /socket/longpoll?vsn=2.0.0&...[&token=T] answers JSON
//   `{status, token, messages}`: 410 = a new session (keep its token; the
//   transport is now open), 200 = `messages` holds encoded frames, 204 =
//   nothing arrived during the poll window. A 410 once we hold a token means
//   the session is gone: the transport closes and the socket reconnects.
// - POST /socket/longpoll?token=T with `application/x-ndjson` bodies, one
//   encoded frame a line, at most 100 frames a batch, one batch in flight.
// The token travels as the `token` query parameter (what phoenix.js sends) and
// also in the `X-Phoenix-Longpoll-Token` header. A server that answers with a
// bare HTTP status and no JSON body is understood too.
// It implements the transport interface described in phoenix-lite.js.

const MAX_BATCH = 100;
const TOKEN_HEADER = "X-Phoenix-Longpoll-Token";

export class LongPollTransport {
  static kind = "longpoll";

  constructor(url, { fetch: fetchImpl, timeout = 20000 } = {}) {
    // Polls keep the session alive; Phoenix skips heartbeats over long-poll.
    this.skipHeartbeat = true;
    this.onopen = this.onmessage = this.onerror = this.onclose = () => {};
    this.url = url;
    this.fetch = fetchImpl || globalThis.fetch.bind(globalThis);
    this.timeout = timeout;
    this.token = null;
    this.active = true;
    this.controllers = new Set(); // requests in flight, aborted on close
    this.outbox = [];
    this.sending = false;
    this.flushTimer = null;
    // Let the socket attach its handlers before the first poll.
    setTimeout(() => this.poll(), 0);
  }

  endpointURL() {
    const url = new URL(this.url);
    if (this.token) url.searchParams.set("token", this.token);
    return url.toString();
  }

  /** One HTTP request; resolves to `{status, json, token}`, rejects on network failure or timeout. */
  async request(method, headers, body) {
    const controller = new AbortController();
    this.controllers.add(controller);
    let timedOut = false;
    const timer = setTimeout(() => { timedOut = true; controller.abort(); }, this.timeout);
    if (this.token) headers[TOKEN_HEADER] = this.token;
    try {
      const resp = await this.fetch(this.endpointURL(), { method, headers, body, signal: controller.signal, cache: "no-store" });
      const text = await resp.text();
      let json = null;
      try { json = text ? JSON.parse(text) : null; } catch { json = null; }
      return { status: resp.status, json, token: resp.headers.get(TOKEN_HEADER) };
    } catch (error) {
      error.timedOut = timedOut;
      throw error;
    } finally {
      clearTimeout(timer);
      this.controllers.delete(controller);
    }
  }

  async poll() {
    while (this.active) {
      let resp;
      try {
        resp = await this.request("GET", { Accept: "application/json" });
      } catch (error) {
        return this.fail(error.timedOut ? "timeout" : error, error.timedOut ? 1005 : 1011, error.timedOut ? "timeout" : "network error");
      }
      if (!this.active) return;
      const status = resp.json && typeof resp.json.status === "number" ? resp.json.status : resp.status;
      const token = (resp.json && resp.json.token) || resp.token;
      if (status === 410 && this.token !== null) return this.fail(410, 3410, "session_gone");
      if (token) this.token = token;
      switch (status) {
        case 200:
          for (const message of (resp.json && resp.json.messages) || []) {
            if (!this.active) return;
            this.onmessage(typeof message === "string" ? message : JSON.stringify(message));
          }
          break;
        case 204:
          break;
        case 410:
          if (!this.token) return this.fail(410, 1011, "no long-poll token");
          this.onopen();
          break;
        case 403:
          this.onerror(403);
          return this.close(1008, "forbidden");
        default:
          return this.fail(status, 1011, `long-poll answered ${status}`);
      }
    }
  }

  /** Queues a frame; frames sent in the same tick go out as one batch. */
  send(text) {
    this.outbox.push(text);
    if (!this.sending && this.flushTimer === null) {
      this.flushTimer = setTimeout(() => { this.flushTimer = null; this.flush(); }, 0);
    }
  }

  async flush() {
    if (this.sending || !this.active) return;
    this.sending = true;
    while (this.active && this.outbox.length > 0) {
      const batch = this.outbox.splice(0, MAX_BATCH);
      let resp;
      try {
        resp = await this.request("POST", { "Content-Type": "application/x-ndjson" }, batch.join("\n"));
      } catch (error) {
        this.sending = false;
        return this.fail(error, 1011, "post failed");
      }
      const status = resp.json && typeof resp.json.status === "number" ? resp.json.status : resp.status;
      if (status !== 200 && status !== 204) {
        this.sending = false;
        return this.fail(status, 1011, `long-poll post answered ${status}`);
      }
    }
    this.sending = false;
  }

  /** Stops everything in flight; an already-stopped transport ignores later calls. */
  stop() {
    if (!this.active) return false;
    this.active = false;
    clearTimeout(this.flushTimer);
    this.outbox = [];
    for (const controller of this.controllers) controller.abort();
    this.controllers.clear();
    return true;
  }

  fail(error, code, reason) {
    if (!this.stop()) return;
    this.onerror(error);
    this.onclose({ code, reason, wasClean: false });
  }

  close(code = 1000, reason = "") {
    if (!this.stop()) return;
    // Like a WebSocket, the close event comes after close() returns.
    setTimeout(() => this.onclose({ code, reason, wasClean: true }), 0);
  }
}
