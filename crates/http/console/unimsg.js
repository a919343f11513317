// unimsg.js — a small ES-module client of the unimsg HTTP API, used by the
// web console (and usable by any page served next to the server): password
// and QR-code login, token refresh, conversations, history, sending, and a
// WebSocket that resumes from the last seen inbox seq.
//
//   import { Client } from '/console/unimsg.js';
//   const client = new Client();
//   await client.login('alice', 'correct horse', 'web');
//   client.connect((event) => console.log(event.seq, event.type, event.data));
//   await client.send('bob', 'hi');
//
// Tokens, the device id and the last seen seq live in `localStorage` (or the
// `storage` given to the constructor), so every tab of one origin shares
// one session. Refreshes are serialised across tabs with the Web Locks API
// where it exists: a refresh token is single-use, and presenting a rotated
// one again revokes the whole session.

const TOKENS_KEY = 'unimsg.tokens';
const DEVICE_KEY = 'unimsg.device_id';
const QR_KEY = 'unimsg.qr_ticket';
const SEQ_KEY = 'unimsg.last_seq.';

/** The SSE events of a QR ticket, in the order they can happen. */
export const QR_EVENTS = ['pending', 'scanned', 'confirmed', 'cancelled', 'expired'];

/** WebSocket close codes the server uses (see `/openapi.json`, `/v1/ws`). */
export const CLOSE = { IDLE: 4000, UNAUTHORIZED: 4001, SLOW_CONSUMER: 4008 };

/** An error answer of the server (`{"error": {"code", "message"}}`), or a network failure (`status` 0). */
export class ApiError extends Error {
  constructor(status, code, message, retryAfter = null) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

/** A random id: 128 bits, hex. */
export function randomId() {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** The id of the direct conversation of two users (`d:{lo}:{hi}`), or null for oneself. */
/** The `to` of a send: a user id (string) as `{user}`, `{user}` or `{group}` as given. */
export function recipient(to) {
  return typeof to === 'string' ? { user: to } : to;
}

export function directConversationId(a, b) {
  if (a === b) return null;
  return a < b ? `d:${a}:${b}` : `d:${b}:${a}`;
}

/**
 * The platform a browser should log in as: `ios` / `android` on phones and
 * tablets, `web` elsewhere. iPadOS reports a Mac user agent; its touch
 * screen gives it away.
 */
export function detectPlatform(
  userAgent = globalThis.navigator?.userAgent ?? '',
  touchPoints = globalThis.navigator?.maxTouchPoints ?? 0,
) {
  if (/iPhone|iPad|iPod/i.test(userAgent)) return 'ios';
  if (/Macintosh/i.test(userAgent) && touchPoints > 1) return 'ios';
  if (/Android/i.test(userAgent)) return 'android';
  return 'web';
}

/** Seconds since the epoch at which a JWT expires, or null if it cannot be read. */
function jwtExpiry(token) {
  try {
    const payload = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const exp = JSON.parse(atob(payload)).exp;
    return typeof exp === 'number' ? exp : null;
  } catch {
    return null;
  }
}

function wsUrl(base, path) {
  const url = new URL(path, base || globalThis.location.href);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  return url.toString();
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export class Client {
  /**
   * @param {object} [options]
   * @param {string} [options.base] the server's origin; default: this page's
   * @param {Storage} [options.storage] where tokens live; default: localStorage
   * @param {(reason: string) => void} [options.onSessionEnd] called once the
   *   session is gone (revoked, refresh refused, logged out in another tab)
   */
  constructor({ base = '', storage = globalThis.localStorage, onSessionEnd = () => {} } = {}) {
    this.base = base;
    this.storage = storage;
    this.onSessionEnd = onSessionEnd;
    this.refreshing = null;
  }

  // ---- stored state --------------------------------------------------

  /** `{access_token, refresh_token, expires_in, user_id, session_id}` or null. */
  get tokens() {
    try {
      return JSON.parse(this.storage.getItem(TOKENS_KEY) ?? 'null');
    } catch {
      return null;
    }
  }

  get loggedIn() {
    return Boolean(this.tokens?.access_token);
  }

  get userId() {
    return this.tokens?.user_id ?? null;
  }

  get sessionId() {
    return this.tokens?.session_id ?? null;
  }

  /** Stores a token pair from login, refresh or a confirmed QR ticket. */
  setTokens(pair) {
    const { access_token, refresh_token, expires_in, user_id, session_id } = pair;
    this.storage.setItem(
      TOKENS_KEY,
      JSON.stringify({ access_token, refresh_token, expires_in, user_id, session_id }),
    );
  }

  clearTokens() {
    this.storage.removeItem(TOKENS_KEY);
  }

  /** A stable id for this browser, sent with logins and QR tickets. */
  get deviceId() {
    let id = this.storage.getItem(DEVICE_KEY);
    if (!id) {
      id = `web-${randomId().slice(0, 16)}`;
      this.storage.setItem(DEVICE_KEY, id);
    }
    return id;
  }

  /** The last inbox seq this browser has handled for the logged-in user. */
  get lastSeq() {
    const n = Number(this.storage.getItem(SEQ_KEY + this.userId));
    return Number.isSafeInteger(n) && n > 0 ? n : 0;
  }

  set lastSeq(seq) {
    if (this.userId) this.storage.setItem(SEQ_KEY + this.userId, String(seq));
  }

  // ---- HTTP ----------------------------------------------------------

  url(path) {
    return this.base + path;
  }

  /**
   * One API call. With `auth`, sends the access token and, on 401, refreshes
   * the pair once and retries; when the refresh is refused the session ends.
   */
  async request(method, path, body = undefined, { auth = true, retry = true } = {}) {
    const headers = { accept: 'application/json' };
    if (body !== undefined) headers['content-type'] = 'application/json';
    const sent = auth ? this.tokens : null;
    if (auth) {
      if (!sent?.access_token) throw new ApiError(401, 'unauthorized', 'not logged in');
      headers.authorization = `Bearer ${sent.access_token}`;
    }
    let response;
    try {
      response = await fetch(this.url(path), {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        credentials: 'omit',
        cache: 'no-store',
      });
    } catch (e) {
      throw new ApiError(0, 'network', e?.message || 'network error');
    }
    if (response.status === 401 && auth && retry) {
      await this.refreshAfter(sent.access_token);
      return this.request(method, path, body, { auth, retry: false });
    }
    if (response.status === 204) return null;
    let data = null;
    const text = await response.text();
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = null;
      }
    }
    if (!response.ok) {
      const retryAfter = Number(response.headers.get('retry-after')) || null;
      throw new ApiError(
        response.status,
        data?.error?.code ?? 'http_' + response.status,
        data?.error?.message ?? response.statusText,
        retryAfter,
      );
    }
    return data;
  }

  /** Ends the session locally and tells the page (once per session). */
  endSession(reason) {
    const had = this.loggedIn;
    this.clearTokens();
    if (had) this.onSessionEnd(reason);
  }

  /**
   * Refreshes the pair unless another tab already did since `staleAccess`
   * was read. Single flight in this tab, serialised across tabs.
   */
  async refreshAfter(staleAccess, reason = 'expired') {
    if (!this.refreshing) {
      const run = async () => {
        const now = this.tokens;
        if (!now?.refresh_token) {
          this.endSession(reason);
          throw new ApiError(401, 'unauthorized', 'not logged in');
        }
        if (now.access_token !== staleAccess) return now; // another tab refreshed
        return this.refresh(reason);
      };
      const locks = globalThis.navigator?.locks;
      const job = locks ? locks.request('unimsg.refresh', run) : run();
      this.refreshing = job.finally(() => {
        this.refreshing = null;
      });
    }
    return this.refreshing;
  }

  // ---- accounts and sessions -----------------------------------------

  async register(username, password, displayName = undefined) {
    const body = { username, password };
    if (displayName) body.display_name = displayName;
    return this.request('POST', '/v1/auth/register', body, { auth: false });
  }

  /** Password login; stores and returns the token pair. */
  async login(username, password, platform = detectPlatform(), deviceId = this.deviceId) {
    const pair = await this.request(
      'POST',
      '/v1/auth/login',
      { username, password, platform, device_id: deviceId },
      { auth: false },
    );
    this.setTokens(pair);
    return pair;
  }

  /** Rotates the token pair. A refused refresh ends the session (`reason` goes to onSessionEnd). */
  async refresh(reason = 'expired') {
    const refresh_token = this.tokens?.refresh_token;
    if (!refresh_token) throw new ApiError(401, 'unauthorized', 'not logged in');
    try {
      const pair = await this.request('POST', '/v1/auth/refresh', { refresh_token }, { auth: false });
      this.setTokens(pair);
      return pair;
    } catch (e) {
      if (e.status === 401 || e.status === 400) this.endSession(reason);
      throw e;
    }
  }

  /**
   * Revokes this session on the server (refreshing an expired access token
   * first) and forgets the tokens. Does not call onSessionEnd: the caller
   * knows.
   */
  async logout() {
    const notify = this.onSessionEnd;
    this.onSessionEnd = () => {};
    try {
      if (this.loggedIn) await this.request('POST', '/v1/auth/logout');
    } catch {
      // The session may already be gone; forgetting it locally is what matters.
    } finally {
      this.onSessionEnd = notify;
      this.clearTokens();
    }
  }

  me() {
    return this.request('GET', '/v1/me');
  }

  /** Another user's public profile, by `{username}` or `{user_id}` (404 when there is none). */
  lookupUser(by) {
    const query = new URLSearchParams(by.username !== undefined ? { username: by.username } : { user_id: by.user_id });
    return this.request('GET', `/v1/users?${query}`);
  }

  /** Refreshes first when the access token is (nearly) expired. */
  async freshAccessToken() {
    const tokens = this.tokens;
    if (!tokens?.access_token) throw new ApiError(401, 'unauthorized', 'not logged in');
    const exp = jwtExpiry(tokens.access_token);
    if (exp !== null && exp - Date.now() / 1000 < 30) {
      return (await this.refreshAfter(tokens.access_token)).access_token;
    }
    return tokens.access_token;
  }

  // ---- QR-code login ---------------------------------------------------

  /**
   * Asks for a login ticket: `{ticket_id, code, qr_url, expires_in,
   * page_secret}`. The secret of this browser's last ticket goes along, so
   * while that ticket is open the same ticket and code come back (unless
   * `reuse` is false). The answer is checked and remembered; the secret is
   * what listening for the tokens takes, so it never leaves this origin.
   */
  async createQrTicket(platform = 'web', deviceId = this.deviceId, { reuse = true } = {}) {
    const body = { platform };
    if (deviceId) body.device_id = deviceId;
    const kept = reuse ? this.keptQrTicket(platform, deviceId) : null;
    if (kept) body.page_secret = kept.page_secret;
    const ticket = await this.request('POST', '/v1/auth/qr', body, { auth: false });
    const complete = ['ticket_id', 'code', 'page_secret'].every((k) => typeof ticket?.[k] === 'string' && ticket[k]);
    const consistent = !kept || ticket.ticket_id !== kept.ticket_id || ticket.page_secret === kept.page_secret;
    if (!complete || !consistent) {
      this.forgetQrTicket();
      throw new ApiError(0, 'bad_answer', 'the server sent an unusable QR ticket');
    }
    this.storage.setItem(
      QR_KEY,
      JSON.stringify({ ticket_id: ticket.ticket_id, page_secret: ticket.page_secret, platform, device_id: deviceId ?? null }),
    );
    return ticket;
  }

  /** The ticket this browser last asked for on this platform and device, if any. */
  keptQrTicket(platform, deviceId) {
    try {
      const kept = JSON.parse(this.storage.getItem(QR_KEY) ?? 'null');
      const fits = kept && kept.platform === platform && kept.device_id === (deviceId ?? null);
      return fits && typeof kept.page_secret === 'string' ? kept : null;
    } catch {
      return null;
    }
  }

  /** Forgets the remembered ticket (it was used, cancelled or expired). */
  forgetQrTicket() {
    this.storage.removeItem(QR_KEY);
  }

  /** The URL of a ticket's QR image (SVG). */
  qrImageUrl(ticketId) {
    return this.url(`/v1/auth/qr/${encodeURIComponent(ticketId)}/qr.svg`);
  }

  /**
   * Follows a ticket (as `createQrTicket` answered it) over SSE, with its
   * page secret. `handlers` may have `pending`, `scanned`, `confirmed`,
   * `cancelled`, `expired` (each called with the event's JSON data) and
   * `error` (the stream failed for good, e.g. an unknown ticket, or it sent
   * something that does not belong to this ticket). A `confirmed` ticket's
   * tokens are checked and stored before `confirmed` runs. The stream is
   * closed after a terminal event. Returns `{close()}`.
   */
  waitQr(ticket, handlers = {}) {
    const id = encodeURIComponent(ticket.ticket_id);
    const secret = encodeURIComponent(ticket.page_secret);
    const source = new EventSource(this.url(`/v1/auth/qr/${id}/events?secret=${secret}`));
    let done = false;
    const finish = () => {
      done = true;
      source.close();
    };
    const fail = () => {
      finish();
      handlers.error?.();
    };
    for (const name of QR_EVENTS) {
      source.addEventListener(name, (event) => {
        if (done) return;
        let data = {};
        try {
          data = JSON.parse(event.data || '{}');
        } catch {
          data = {};
        }
        if (name === 'pending' && data.ticket_id !== undefined && data.ticket_id !== ticket.ticket_id) return fail();
        if (name === 'confirmed') {
          const usable = ['access_token', 'refresh_token', 'user_id', 'session_id'].every(
            (k) => typeof data[k] === 'string' && data[k],
          );
          if (!usable) return fail();
        }
        if (name === 'confirmed' || name === 'cancelled' || name === 'expired') {
          finish();
          this.forgetQrTicket();
        }
        if (name === 'confirmed') this.setTokens(data);
        handlers[name]?.(data);
      });
    }
    source.addEventListener('error', () => {
      // EventSource reconnects by itself after a dropped connection; it
      // gives up (CLOSED) on an error status such as 404 for an unknown ticket.
      if (!done && source.readyState === EventSource.CLOSED) fail();
    });
    return { close: finish, source };
  }

  /** The phone's side: who is asking for ticket `{code}` or `{ticket_id}` (a string is taken as a code). */
  scan(codeOrTicket) {
    const body = typeof codeOrTicket === 'string' ? { code: codeOrTicket } : codeOrTicket;
    return this.request('POST', '/v1/auth/qr/scan', body);
  }

  confirm(ticketId) {
    return this.request('POST', `/v1/auth/qr/${encodeURIComponent(ticketId)}/confirm`);
  }

  cancel(ticketId) {
    return this.request('POST', `/v1/auth/qr/${encodeURIComponent(ticketId)}/cancel`);
  }

  // ---- messaging -------------------------------------------------------

  /**
   * Sends a text to a user. `clientMsgId` makes a retry safe: the server
   * answers a repeated id with the original message. One retry on a
   * network failure, with the same id.
   */
  /** Sends a text to a user id, or to `{group: id}`. */
  async send(to, text, clientMsgId = randomId()) {
    const body = { to: recipient(to), kind: 'chat', content: { text }, client_msg_id: clientMsgId };
    try {
      return await this.request('POST', '/v1/messages', body);
    } catch (e) {
      if (e.status !== 0) throw e;
      await sleep(500);
      return this.request('POST', '/v1/messages', body);
    }
  }

  /** Inbox events after `after`: `{events, next_after, has_more}`. */
  sync(after = 0, limit = 200) {
    return this.request('GET', `/v1/sync?after=${after}&limit=${limit}`);
  }

  /** `{conversations: [{conversation_id, peer, last_message, unread, …}]}` */
  conversations() {
    return this.request('GET', '/v1/conversations');
  }

  /** One page of a conversation, newest first: `{messages, next_before}`. */
  history(conversationId, before = null, limit = 30) {
    const q = new URLSearchParams({ limit: String(limit) });
    if (before !== null && before !== undefined) q.set('before', String(before));
    return this.request('GET', `/v1/conversations/${encodeURIComponent(conversationId)}/messages?${q}`);
  }

  /** Marks a conversation read up to a message (`s:{me}` for notifications). */
  markRead(conversationId, messageId) {
    return this.request('POST', `/v1/conversations/${encodeURIComponent(conversationId)}/read`, {
      message_id: messageId,
    });
  }

  // ---- live events ------------------------------------------------------

  /**
   * Opens the WebSocket and keeps it open: authenticates with a first
   * frame (the token stays out of URLs and logs), resumes after the last
   * handled seq, hands each new inbox event to `onEvent` once and in
   * order (events at or below the last seq are dropped), remembers the
   * seq, acknowledges delivery, and reconnects with exponential back-off
   * (0.5 s doubling to 30 s, with jitter). A revoked session or a refused
   * refresh ends it. `onState` receives 'connecting', 'open', 'closed'.
   * Returns `{send(to, text, clientMsgId?), close()}`: `send` puts a
   * `send` frame on the open socket without waiting for earlier ones (the
   * server stores a socket's sends in the order sent and answers each as
   * it completes, matched here by frame id); it resolves with the
   * `send.ok` and rejects with the error (`status` 0 when the socket
   * closed first: retry with the same `clientMsgId`, which is safe). With
   * no open socket it sends over HTTP.
   */
  connect(onEvent, { onState = () => {} } = {}) {
    let socket = null;
    let stopped = false;
    let attempt = 0;
    let timer = null;
    let ackTimer = null;
    let acked = 0;
    // Sends in flight on the socket, by frame id.
    const inFlight = new Map();
    let frameIds = 0;
    const failInFlight = () => {
      for (const { reject } of inFlight.values()) {
        reject(Object.assign(new Error('the connection closed before the answer'), { status: 0 }));
      }
      inFlight.clear();
    };
    // This connection's own position: another tab of the same browser may
    // be ahead in storage, yet this tab must still see every event.
    let seen = this.lastSeq;

    const stop = () => {
      stopped = true;
      clearTimeout(timer);
      clearTimeout(ackTimer);
      if (socket && socket.readyState <= WebSocket.OPEN) socket.close(1000, 'bye');
      socket = null;
      failInFlight();
      onState('closed');
    };

    const scheduleAck = () => {
      if (ackTimer) return;
      ackTimer = setTimeout(() => {
        ackTimer = null;
        const seq = seen;
        if (seq > acked && socket?.readyState === WebSocket.OPEN) {
          acked = seq;
          socket.send(JSON.stringify({ type: 'ack', seq }));
        }
      }, 300);
    };

    const retryLater = () => {
      if (stopped) return;
      const delay = Math.min(30000, 500 * 2 ** attempt) * (0.75 + Math.random() * 0.5);
      attempt += 1;
      onState('connecting');
      timer = setTimeout(open, delay);
    };

    const open = async () => {
      if (stopped) return;
      onState('connecting');
      let token;
      try {
        token = await this.freshAccessToken();
      } catch (e) {
        if (this.loggedIn) retryLater();
        else stop();
        return;
      }
      if (stopped) return;
      const after = seen;
      const ws = new WebSocket(wsUrl(this.base, `/v1/ws?after=${after}`));
      socket = ws;
      let ready = false;
      ws.addEventListener('open', () => {
        ws.send(JSON.stringify({ type: 'auth', token, after }));
      });
      ws.addEventListener('message', (message) => {
        let frame;
        try {
          frame = JSON.parse(message.data);
        } catch {
          return;
        }
        // Answers to sends first: `send.ok` carries a seq too.
        if ((frame.type === 'send.ok' || frame.type === 'error') && inFlight.has(frame.id)) {
          const { resolve, reject } = inFlight.get(frame.id);
          inFlight.delete(frame.id);
          if (frame.type === 'send.ok') resolve(frame);
          else reject(Object.assign(new Error(frame.error?.message ?? 'refused'), { code: frame.error?.code }));
          return;
        }
        if (typeof frame.seq === 'number') {
          if (frame.seq <= seen) return; // already handled (a replay overlapping live events)
          seen = frame.seq;
          if (seen > this.lastSeq) this.lastSeq = seen;
          try {
            onEvent(frame);
          } finally {
            scheduleAck();
          }
          if (frame.type === 'session.revoked' && frame.data?.session_id === this.sessionId) {
            stop();
            this.endSession('revoked');
          }
          return;
        }
        if (frame.type === 'ready') {
          ready = true;
          attempt = 0;
          // A server whose inbox is behind what we saw (a new database):
          // follow the server's numbering, reconnecting from its end.
          if (frame.last_seq < seen) {
            seen = frame.last_seq;
            this.lastSeq = seen;
            ws.close(1000, 'resume');
            return;
          }
          onState('open');
        }
      });
      ws.addEventListener('close', async (event) => {
        if (socket !== ws) return;
        socket = null;
        failInFlight();
        if (stopped) return;
        if (event.code === CLOSE.UNAUTHORIZED) {
          // The token was refused (expired?) or this session was revoked:
          // a refresh decides. It fails for a revoked session, which ends it.
          try {
            await this.refreshAfter(token, 'revoked');
          } catch {
            if (!this.loggedIn) {
              stop();
              return;
            }
          }
          if (!ready) attempt = Math.max(attempt, 1);
        }
        retryLater();
      });
    };

    const send = (to, text, clientMsgId = randomId()) => {
      if (!socket || socket.readyState !== WebSocket.OPEN) return this.send(to, text, clientMsgId);
      const id = `s${(frameIds += 1)}`;
      const answered = new Promise((resolve, reject) => inFlight.set(id, { resolve, reject }));
      socket.send(JSON.stringify({
        type: 'send', id, to: recipient(to), kind: 'chat', content: { text }, client_msg_id: clientMsgId,
      }));
      return answered;
    };

    open();
    return { send, close: stop };
  }
}
