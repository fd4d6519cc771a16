// The signaling socket (/ws, token as subprotocol "bearer.<JWT>"): request/reply by `ref`, pushed messages by type,
// reconnection with backoff. docs/protocol.md describes the messages.
import { currentToken, tokenExpired } from "/static/auth.js";

export class SignalError extends Error {
  constructor(code, message, retryAfterMs = null) {
    super(message || code);
    this.code = code;
    this.retryAfterMs = retryAfterMs; // rate_limited: when the server would take it
  }
}

const PROTOCOL = "jointreview.v1";
const BACKOFF_MS = [500, 1000, 2000, 4000, 8000, 10000];
// Close codes after which reconnecting would not help. too_many_sockets: this identity
// opened more sockets elsewhere (other tabs); reconnecting would close one of those.
const FINAL = { 4401: "token_expired", 4409: "superseded", 4408: "too_many_sockets" };
// A request refused with rate_limited was not processed: retried by itself when the
// server says it will take it soon; otherwise the caller shows the error.
const RATE_RETRIES = 2;
const RATE_RETRY_MAX_MS = 3000;
// A dead socket (a cut link, a new address) closes nothing and says nothing: the page
// pings every PING_MS and counts the socket lost when nothing at all has come for
// DEAD_AFTER_MS (the server's WebSocket heartbeat does the same on its side); a socket
// not greeted within CONNECT_DEADLINE_MS is given up and tried again.
const PING_MS = 1000;
const DEAD_AFTER_MS = 2500;
const CONNECT_DEADLINE_MS = 5000;
const UNANSWERED_RETRY_MS = 200;

export class Signal {
  // heartbeat: {pingMs, deadAfterMs}; in a call the defaults (a dead link noticed in
  // ~2.5 s); a page that only waits (the inbox) may ping less often.
  constructor({ pingMs = PING_MS, deadAfterMs = DEAD_AFTER_MS } = {}) {
    this.pingMs = pingMs;
    this.deadAfterMs = deadAfterMs;
    this.ws = null;
    this.welcome = null;
    this.state = "idle"; // idle | connecting | open | reconnecting | closed
    this.handlers = new Map();
    this.waiters = new Map();
    this.refs = 0;
    this.attempt = 0;
    this.stopped = false;
    this.finalCode = null;
    this.heardAt = 0;
    this.pingedAt = 0;
    this.beat = null;
  }

  on(type, fn) {
    if (!this.handlers.has(type)) this.handlers.set(type, new Set());
    this.handlers.get(type).add(fn);
    return () => this.handlers.get(type).delete(fn);
  }

  emit(type, msg) {
    for (const fn of this.handlers.get(type) || []) {
      try {
        fn(msg);
      } catch (err) {
        // A faulty handler must not stop the others; surface it as a warning.
        console.warn("handler for", type, "failed:", err);
      }
    }
  }

  setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.emit("state", { state });
  }

  // Resolves with the `welcome` message; rejects if the socket closes before it.
  connect() {
    this.stopped = false;
    this.setState(this.attempt ? "reconnecting" : "connecting");
    return new Promise((resolve, reject) => {
      const proto = location.protocol === "https:" ? "wss:" : "ws:";
      // The token rides in a subprotocol, never in the URL (a browser prints a socket's
      // URL in its console when it fails or closes): the server answers "jointreview.v1".
      const ws = new WebSocket(`${proto}//${location.host}/ws`, [PROTOCOL, `bearer.${currentToken()}`]);
      this.ws = ws;
      let greeted = false;
      this.heardAt = Date.now();
      this.watch(ws, () => greeted);
      ws.onmessage = (ev) => {
        this.heardAt = Date.now();
        let msg;
        try {
          msg = JSON.parse(ev.data);
        } catch {
          return;
        }
        if (msg.type === "welcome") {
          greeted = true;
          this.welcome = msg;
          this.attempt = 0;
          this.setState("open");
          resolve(msg);
        }
        this.dispatch(msg);
      };
      // Also kept for dropForTest, which loses the socket at once as a dead network does.
      this.lose = (ev) => this.closed(ws, ev, greeted, reject);
      ws.onclose = this.lose;
    });
  }

  // The heartbeat: a ping a second while open; lost when silent past the deadline.
  watch(ws, greeted) {
    clearInterval(this.beat);
    this.beat = setInterval(() => {
      if (this.ws !== ws) return clearInterval(this.beat);
      const silent = Date.now() - this.heardAt;
      const open = greeted();
      if (silent > (open ? this.deadAfterMs : CONNECT_DEADLINE_MS)) {
        try {
          ws.close(4000, "no heartbeat");
        } catch {
          // already closing
        }
        this.lose({ code: 4000, reason: "no heartbeat" });
      } else if (open && ws.readyState === WebSocket.OPEN && silent >= this.pingMs - 100) {
        if (Date.now() - this.pingedAt < this.pingMs - 100) return; // one ping in flight at a time
        this.pingedAt = Date.now();
        ws.send(JSON.stringify({ type: "ping", v: 1 }));
      }
    }, 250);
  }

  closed(ws, ev, greeted, reject) {
    if (this.ws !== ws) return;
    this.ws = null;
    clearInterval(this.beat);
    for (const [, w] of this.waiters) w.reject(new SignalError("disconnected", "the connection closed"));
    this.waiters.clear();
    const final = FINAL[ev.code];
    if (!greeted) reject(new SignalError(final || "connect_failed", ev.reason));
    if (final) {
      this.finalCode = final;
      this.setState("closed");
      this.emit("closed", { code: final });
    } else if (!this.stopped) {
      this.scheduleReconnect(!greeted && ev.code === 4000);
    } else {
      this.setState("closed");
    }
  }

  // unanswered: the attempt got no greeting by its deadline (a dead link says nothing);
  // it took CONNECT_DEADLINE_MS already, so the next one starts at once and an attempt is
  // always under way when the link returns. A socket that was refused or closed backs off.
  scheduleReconnect(unanswered = false) {
    if (tokenExpired()) {
      this.finalCode = "token_expired";
      this.setState("closed");
      this.emit("closed", { code: "token_expired" });
      return;
    }
    this.setState("reconnecting");
    let delay = UNANSWERED_RETRY_MS * (0.5 + Math.random());
    if (!unanswered || !this.attempt) {
      delay = BACKOFF_MS[Math.min(this.attempt, BACKOFF_MS.length - 1)];
      this.attempt += 1;
    }
    this.retryTimer = setTimeout(() => this.retry(), delay);
  }

  async retry() {
    if (this.stopped) return;
    if (navigator.onLine === false) {
      // No network at all: an attempt would fail; the browser says when it is back,
      // and the page reconnects at that moment instead of at the next backoff step.
      window.addEventListener("online", () => this.retry(), { once: true });
      return;
    }
    try {
      const welcome = await this.connect();
      this.emit("reconnected", welcome);
    } catch {
      // closed() has scheduled the next attempt (or given up for good)
    }
  }

  dispatch(msg) {
    if (msg.ref && this.waiters.has(msg.ref)) {
      const w = this.waiters.get(msg.ref);
      this.waiters.delete(msg.ref);
      if (msg.type === "error") w.reject(new SignalError(msg.code, msg.message, msg.retry_after_ms ?? null));
      else w.resolve(msg);
      return;
    }
    if (msg.type === "error") {
      if (["superseded", "token_expired", "too_many_sockets"].includes(msg.code)) this.finalCode = msg.code;
      this.emit("error", msg);
      return;
    }
    this.emit(msg.type, msg);
    this.emit("*", msg);
  }

  send(msg) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(msg));
    return true;
  }

  // Send and wait for the direct reply (matched by ref). Rejects with SignalError.
  async request(msg, timeoutMs = 15000) {
    for (let tries = 0; ; tries++) {
      try {
        return await this.requestOnce(msg, timeoutMs);
      } catch (err) {
        const wait = err.code === "rate_limited" ? err.retryAfterMs : null;
        if (wait === null || wait > RATE_RETRY_MAX_MS || tries >= RATE_RETRIES) throw err;
        console.warn(`${msg.type}: rate limited, retrying in ${wait} ms`);
        await new Promise((r) => setTimeout(r, wait));
      }
    }
  }

  requestOnce(msg, timeoutMs) {
    const ref = `r${++this.refs}`;
    return new Promise((resolve, reject) => {
      if (!this.send({ ...msg, ref })) {
        reject(new SignalError("disconnected", "not connected"));
        return;
      }
      const timer = setTimeout(() => {
        this.waiters.delete(ref);
        reject(new SignalError("timeout", `no reply to ${msg.type}`));
      }, timeoutMs);
      this.waiters.set(ref, {
        resolve: (m) => (clearTimeout(timer), resolve(m)),
        reject: (e) => (clearTimeout(timer), reject(e)),
      });
    });
  }

  close() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    clearInterval(this.beat);
    if (this.ws) this.ws.close(1000, "bye");
    this.setState("closed");
  }

  // For tests and diagnostics: drop the connection as a network failure would.
  dropForTest() {
    const ws = this.ws;
    if (!ws) return;
    ws.close(4000, "test drop");
    // Without the network the close handshake may never finish: the page counts the
    // socket lost now, as it would on a dead link, and ignores its late close event.
    this.lose({ code: 4000, reason: "test drop" });
  }
}
