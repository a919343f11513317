// app.js — the web console's main page (`/`): the login page (password
// form and a QR-code panel with live SSE status) which becomes the message
// center after login (conversations with unread counts, history paging, a
// send box, live WebSocket updates resumed from the last seq, system
// notifications and broadcasts with an unread badge, logout).

import { Client, directConversationId } from './unimsg.js';
import { t, applyI18n, bindLanguageSelect, onLangChange } from './i18n.js';
import { $, h, show, announce, errorText, formatTime, contentText, fillBadge } from './ui.js';

const SYSTEM_KEY = 'unimsg.system.';
const MAX_SYSTEM_ITEMS = 200;
const MAX_AUTO_RENEWALS = 10;
const USER_ID = /^[A-Za-z0-9_.-]{1,64}$/;

const client = new Client({ onSessionEnd: (reason) => sessionEnded(reason) });

const state = {
  view: 'none', // login | center
  notice: null, // [key] shown above the login forms
  me: null,
  convs: [],
  names: new Map(), // user_id → display name, from the conversation list
  open: null, // {kind: 'chat', id, peer?, group?, title?} | {kind: 'system'}
  drafts: new Map(), // conversation id → {text, error}: what was typed there and not sent
  messages: new Map(), // message_id → message, for the open conversation
  nextBefore: null,
  conn: 'closed',
  socket: null,
  refreshTimer: null,
};

const qr = {
  ticket: null,
  waiter: null,
  timer: null,
  status: ['qr.loading', {}],
  dead: new Set(), // tickets that can no longer be used
  expiresAt: 0,
  renewals: 0,
  stale: false, // the shown code is not usable (cancelled, failed)
  generation: 0, // the newest startQr call; older ones give up
};

// ---- system notifications: kept locally per user -------------------------

function loadSystem() {
  try {
    const saved = JSON.parse(localStorage.getItem(SYSTEM_KEY + client.userId) ?? 'null');
    if (saved && Array.isArray(saved.items)) return { items: saved.items, readSeq: saved.readSeq || 0 };
  } catch {
    // Corrupt: start over.
  }
  return { items: [], readSeq: 0 };
}

function saveSystem(system) {
  system.items.sort((a, b) => b.seq - a.seq);
  system.items.length = Math.min(system.items.length, MAX_SYSTEM_ITEMS);
  localStorage.setItem(SYSTEM_KEY + client.userId, JSON.stringify(system));
}

function systemUnread(system = loadSystem()) {
  return system.items.filter((i) => i.seq > system.readSeq).length;
}

/** Adds a notification or broadcast event; false if it was already known. */
function addSystemItem(event) {
  const system = loadSystem();
  const d = event.data || {};
  if (system.items.some((i) => i.message_id === d.message_id)) return false;
  system.items.push({
    seq: event.seq,
    kind: event.type === 'broadcast.new' ? 'broadcast' : 'notification',
    message_id: d.message_id,
    from: d.from || 'system',
    content: d.content ?? null,
    sent_at: d.sent_at || event.ts,
  });
  saveSystem(system);
  return true;
}

/**
 * Marks everything in the System section read: locally (broadcasts have no
 * server read state) and on the server for notifications
 * (`POST /v1/conversations/s:{me}/read` up to the newest one).
 */
function markSystemRead() {
  const system = loadSystem();
  const unread = system.items.filter((i) => i.seq > system.readSeq);
  if (!unread.length) return;
  system.readSeq = Math.max(system.readSeq, ...unread.map((i) => i.seq));
  saveSystem(system);
  const newest = unread.filter((i) => i.kind === 'notification').sort((a, b) => b.seq - a.seq)[0];
  if (newest && client.userId) {
    client.markRead(`s:${client.userId}`, newest.message_id).catch(() => {});
  }
  renderSystemBadge();
}

// ---- rendering --------------------------------------------------------------

function renderAll() {
  show($('login-view'), state.view === 'login');
  show($('center-view'), state.view === 'center');
  show($('logout'), state.view === 'center');
  show($('whoami'), state.view === 'center' && Boolean(state.me));
  show($('conn'), state.view === 'center');
  document.title = t('app.title');
  if (state.view === 'login') renderLogin();
  if (state.view === 'center') renderCenter();
}

function renderLogin() {
  show($('login-notice'), Boolean(state.notice));
  $('login-notice').textContent = state.notice ? t(state.notice) : '';
  renderQr();
}

function renderQr() {
  const [key, params] = qr.status;
  $('qr-state').textContent = t(key, params);
  $('qr-help').textContent = t('qr.help', { url: `${location.origin}/m/qr` });
  show($('qr-fresh'), qr.stale);
  $('qr-image').classList.toggle('stale', qr.stale);
  $('qr-code').classList.toggle('stale', qr.stale);
  renderExpiry();
}

function renderExpiry() {
  const left = Math.max(0, Math.round((qr.expiresAt - Date.now()) / 1000));
  const text =
    qr.ticket && !qr.stale && left > 0
      ? t('qr.expires', { time: `${Math.floor(left / 60)}:${String(left % 60).padStart(2, '0')}` })
      : '';
  if ($('qr-expiry').textContent !== text) $('qr-expiry').textContent = text;
}

function setQrStatus(key, params = {}) {
  qr.status = [key, params];
  renderQr();
}

function renderCenter() {
  $('whoami').textContent = state.me ? t('center.me', { name: state.me.display_name }) : '';
  $('my-id').textContent = client.userId ?? '';
  renderConn();
  renderConversations();
  renderSystemBadge();
  renderPane();
}

function renderConn() {
  const key = { open: 'center.live', connecting: 'center.connecting' }[state.conn] ?? 'center.offline';
  $('conn').textContent = t(key);
  $('conn').dataset.state = state.conn;
}

function renderSystemBadge() {
  const system = loadSystem();
  const n = systemUnread(system);
  const badge = $('system-badge');
  show(badge, n > 0);
  fillBadge(badge, n, t('center.unread', { n }));
  const newest = system.items[0];
  $('system-preview').textContent = newest ? contentText(newest.content) : t('center.system.help');
  $('system-item').setAttribute('aria-current', state.open?.kind === 'system' ? 'true' : 'false');
}

function preview(message) {
  if (!message) return '';
  const text = message.recalled ? t('center.recalled') : contentText(message.content);
  return message.from === client.userId ? `${t('center.you')}: ${text}` : text;
}

function renderConversations() {
  const list = $('conv-list');
  const items = state.convs.map((c) => {
    const current = state.open?.kind === 'chat' && state.open.id === c.conversation_id;
    return h(
      'li',
      {},
      h(
        'button',
        {
          type: 'button',
          class: 'conv',
          'aria-current': current ? 'true' : 'false',
          dataset: { peer: c.peer, group: c.group_id, conversation: c.conversation_id },
          onclick: () => (c.group_id ? openGroup(c) : openConversation(c.peer)),
        },
        h(
          'span',
          { class: 'conv-main' },
          h(
            'span',
            { class: 'conv-title' },
            c.group_id ? c.group_name || c.group_id : c.peer_display_name || c.peer,
          ),
          h('span', { class: 'conv-preview' }, preview(c.last_message)),
        ),
        h(
          'span',
          { class: 'conv-meta' },
          c.last_message ? h('time', { datetime: c.last_message.sent_at }, formatTime(c.last_message.sent_at)) : null,
          c.unread > 0 ? fillBadge(h('span', { class: 'badge' }), c.unread, t('center.unread', { n: c.unread })) : null,
        ),
      ),
    );
  });
  list.replaceChildren(...items);
  show($('conv-empty'), state.convs.length === 0);
}

function messageItem(m) {
  const mine = m.from === client.userId;
  return h(
    'li',
    { class: `msg ${mine ? 'mine' : 'theirs'}`, dataset: { id: m.message_id, seq: m.conv_seq } },
    h('span', { class: 'who' }, mine ? t('center.you') : state.names.get(m.from) || m.from),
    h('p', { class: 'text' }, m.recalled ? t('center.recalled') : contentText(m.content)),
    h('time', { datetime: m.sent_at }, formatTime(m.sent_at)),
  );
}

function systemItem(item) {
  const c = item.content && typeof item.content === 'object' ? item.content : {};
  const title = typeof c.title === 'string' ? c.title : null;
  const body = typeof c.body === 'string' ? c.body : title ? null : contentText(item.content);
  return h(
    'li',
    { class: `msg system-msg ${item.kind}`, dataset: { id: item.message_id, seq: item.seq } },
    h(
      'span',
      { class: 'who' },
      h('span', { class: 'tag' }, t(item.kind === 'broadcast' ? 'center.broadcast' : 'center.notification')),
      ' ',
      t('center.from', { name: item.from }),
    ),
    title ? h('strong', { class: 'title' }, title) : null,
    body ? h('p', { class: 'text' }, body) : null,
    h('time', { datetime: item.sent_at }, formatTime(item.sent_at)),
  );
}

function renderPane() {
  const open = state.open;
  $('center-view').classList.toggle('pane-open', Boolean(open));
  const list = $('messages');
  const empty = $('pane-empty');
  if (!open) {
    $('pane-title').textContent = t('center.pick');
    list.replaceChildren();
    show(empty, false);
    show($('send-form'), false);
    show($('load-older'), false);
    return;
  }
  if (open.kind === 'system') {
    $('pane-title').textContent = t('center.system');
    const items = loadSystem().items.slice().reverse(); // oldest first, like a chat
    list.replaceChildren(...items.map(systemItem));
    empty.textContent = t('center.system.none');
    show(empty, items.length === 0);
    show($('send-form'), false);
    show($('load-older'), false);
  } else {
    $('pane-title').textContent = open.group
      ? open.title || open.group
      : state.names.get(open.peer) || open.peer;
    list.classList.toggle('group', Boolean(open.group));
    const messages = [...state.messages.values()].sort((a, b) => a.conv_seq - b.conv_seq);
    list.replaceChildren(...messages.map(messageItem));
    empty.textContent = t('center.empty');
    show(empty, messages.length === 0);
    show($('send-form'), true);
    show($('load-older'), state.nextBefore !== null && state.nextBefore !== undefined);
  }
}

function scrollToEnd() {
  const list = $('messages');
  list.scrollTop = list.scrollHeight;
}

function nearEnd() {
  const list = $('messages');
  return list.scrollHeight - list.scrollTop - list.clientHeight < 80;
}

// ---- login --------------------------------------------------------------------

function showLogin(notice = null) {
  stopLive();
  state.view = 'login';
  state.notice = notice;
  state.me = null;
  state.convs = [];
  state.open = null;
  state.messages = new Map();
  qr.renewals = 0;
  renderAll();
  startQr();
}

function stopQr() {
  qr.waiter?.close();
  qr.waiter = null;
  clearInterval(qr.timer);
  qr.timer = null;
}

/** Asks for a ticket (the same one while this device's ticket is valid) and follows it. */
async function startQr(status = 'qr.loading') {
  stopQr();
  const generation = ++qr.generation;
  qr.stale = false;
  qr.ticket = null;
  setQrStatus(status);
  let ticket;
  try {
    // The page's remembered secret brings back its open ticket; never reuse a dead one.
    ticket = await client.createQrTicket('web', client.deviceId);
    if (qr.dead.has(ticket.ticket_id)) ticket = await client.createQrTicket('web', client.deviceId, { reuse: false });
  } catch (e) {
    if (generation !== qr.generation) return;
    qr.stale = true;
    setQrStatus(e.status === 429 ? 'error.rate' : 'qr.unavailable', { n: e.retryAfter ?? 60 });
    return;
  }
  if (state.view !== 'login' || generation !== qr.generation) return;
  qr.ticket = ticket;
  qr.expiresAt = Date.now() + ticket.expires_in * 1000;
  const image = $('qr-image');
  image.src = client.qrImageUrl(ticket.ticket_id);
  show(image, true);
  $('qr-code').textContent = ticket.code;
  $('qr-code').dataset.code = ticket.code;
  $('qr-code').dataset.ticket = ticket.ticket_id;
  if (status === 'qr.loading') setQrStatus('qr.waiting');
  qr.timer = setInterval(renderExpiry, 1000);
  const id = ticket.ticket_id;
  // (The remembered ticket is not forgotten here: an aborted stream, as on
  // reload, ends the same way, and the server hands back only open tickets.)
  const dead = () => {
    qr.dead.add(id);
    stopQr();
  };
  qr.waiter = client.waitQr(ticket, {
    pending: () => {
      if (qr.status[0] === 'qr.loading') setQrStatus('qr.waiting');
    },
    scanned: (d) => {
      setQrStatus('qr.scanned', { name: d.display_name || '?' });
      announce($('qr-state').textContent);
    },
    confirmed: () => {
      dead();
      setQrStatus('qr.confirmed');
      enterCenter();
    },
    cancelled: () => {
      dead();
      qr.stale = true;
      setQrStatus('qr.cancelled');
      announce($('qr-state').textContent);
    },
    expired: () => {
      dead();
      renewExpired();
    },
    error: () => {
      dead();
      // The stream was refused: a ticket that expired while the stream was
      // reconnecting is simply replaced; anything else needs the user.
      if (Date.now() >= qr.expiresAt) return renewExpired();
      qr.stale = true;
      setQrStatus('qr.failed');
    },
  });
}

/** An expired code is replaced automatically, a limited number of times while nobody looks. */
function renewExpired() {
  if (state.view !== 'login') return;
  if (qr.renewals >= MAX_AUTO_RENEWALS) {
    qr.stale = true;
    setQrStatus('qr.timeout');
    return;
  }
  if (document.hidden) {
    document.addEventListener('visibilitychange', renewExpired, { once: true });
    return;
  }
  qr.renewals += 1;
  startQr('qr.expired');
}

/** Whether the password form creates an account instead of signing in. */
let signingUp = false;

function setSignup(on) {
  signingUp = on;
  show($('signup-name'), on);
  $('password-heading').textContent = t(on ? 'signup.heading' : 'login.password.heading');
  $('login-submit').textContent = t(on ? 'signup.submit' : 'login.submit');
  $('signup-toggle').textContent = t(on ? 'signup.back' : 'signup.offer');
  $('login-password').autocomplete = on ? 'new-password' : 'current-password';
  $('login-error').textContent = '';
}

/** Creates the account, then signs in with it. */
async function signUp(username, password) {
  const error = $('login-error');
  const button = $('login-submit');
  button.disabled = true;
  button.textContent = t('signup.busy');
  try {
    await client.register(username, password, $('signup-display').value.trim() || undefined);
    await client.login(username, password, 'web');
    $('login-password').value = '';
    setSignup(false);
    announce(t('signup.ok'));
    await enterCenter();
  } catch (e) {
    if (e.status === 409) error.textContent = t('signup.taken');
    else if (e.code === 'registration_closed') {
      error.textContent = t('signup.closed');
      show($('signup-toggle'), false);
    } else if (e.status === 400) error.textContent = t('signup.invalid');
    else error.textContent = errorText(e);
    $('login-username').focus();
  } finally {
    button.disabled = false;
    button.textContent = t(signingUp ? 'signup.submit' : 'login.submit');
  }
}

async function passwordLogin(event) {
  event.preventDefault();
  if (signingUp) {
    const username = $('login-username').value.trim();
    const password = $('login-password').value;
    if (!username || password.length < 8) {
      $('login-error').textContent = t('signup.invalid');
      (username ? $('login-password') : $('login-username')).focus();
      return;
    }
    await signUp(username, password);
    return;
  }
  const username = $('login-username').value.trim();
  const password = $('login-password').value;
  const error = $('login-error');
  const button = $('login-submit');
  if (!username || !password) {
    error.textContent = t('login.bad');
    (username ? $('login-password') : $('login-username')).focus();
    return;
  }
  error.textContent = '';
  button.disabled = true;
  button.textContent = t('login.busy');
  try {
    await client.login(username, password, 'web');
    $('login-password').value = '';
    announce(t('login.ok'));
    await enterCenter();
  } catch (e) {
    error.textContent = e.status === 401 ? t('login.bad') : errorText(e);
    $('login-password').focus();
  } finally {
    button.disabled = false;
    button.textContent = t('login.submit');
  }
}

// ---- message center -------------------------------------------------------------

async function enterCenter() {
  stopQr();
  state.view = 'center';
  state.notice = null;
  renderAll();
  try {
    state.me = await client.me();
  } catch (e) {
    if (!client.loggedIn) return; // sessionEnded has run
    announce(errorText(e));
  }
  if (state.view !== 'center') return;
  renderAll();
  await refreshConversations();
  stopLive();
  state.socket = client.connect(onEvent, {
    onState: (s) => {
      state.conn = s;
      renderConn();
    },
  });
  $('main').focus({ preventScroll: true });
}

function stopLive() {
  state.socket?.close();
  state.socket = null;
  clearTimeout(state.refreshTimer);
  state.conn = 'closed';
}

function sessionEnded(reason) {
  const notice = { revoked: 'center.revoked', expired: 'center.expired', loggedout: 'center.loggedout' }[reason];
  announce(t(notice ?? 'center.loggedout'));
  showLogin(notice ?? 'center.loggedout');
}

async function refreshConversations() {
  try {
    const all = (await client.conversations()).conversations;
    // One to one (with a `peer`) and groups (with a `group_id`).
    const conversations = all.filter((c) => c.peer || c.group_id);
    for (const c of conversations) if (c.peer && c.peer_display_name) state.names.set(c.peer, c.peer_display_name);
    state.convs = conversations;
  } catch (e) {
    if (client.loggedIn) announce(errorText(e));
    return;
  }
  if (state.view !== 'center') return;
  renderConversations();
  // The open conversation is being looked at: keep it read.
  const open = state.open;
  if (open?.kind === 'chat' && !document.hidden) {
    const c = state.convs.find((x) => x.conversation_id === open.id);
    if (c && c.unread > 0) markOpenRead();
  }
}

/** Reloads the list soon; several events in a burst cause one request. */
function refreshSoon() {
  clearTimeout(state.refreshTimer);
  state.refreshTimer = setTimeout(refreshConversations, 150);
}

/** Keeps the open conversation's unsent text and its error with it. */
function stashDraft() {
  const open = state.open;
  if (open?.kind !== 'chat') return;
  const text = $('send-text').value;
  const error = $('send-error').textContent;
  if (text || error) state.drafts.set(open.id, { text, error });
  else state.drafts.delete(open.id);
}

/** Puts back what was typed in conversation `id` (nothing if none). */
function restoreDraft(id) {
  const draft = state.drafts.get(id);
  $('send-text').value = draft?.text ?? '';
  $('send-error').textContent = draft?.error ?? '';
}

async function openConversation(peer) {
  const id = directConversationId(client.userId, peer);
  if (!id) return;
  await openChat({ kind: 'chat', id, peer });
}

/** A group conversation from the list: its messages, and the send box to the group. */
async function openGroup(c) {
  await openChat({ kind: 'chat', id: c.conversation_id, group: c.group_id, title: c.group_name });
}

async function openChat(chat) {
  const id = chat.id;
  stashDraft();
  restoreDraft(id);
  state.open = chat;
  state.messages = new Map();
  state.nextBefore = null;
  renderConversations();
  renderSystemBadge();
  renderPane();
  try {
    const page = await client.history(id, null, 30);
    if (state.open?.id !== id) return;
    for (const m of page.messages) state.messages.set(m.message_id, m);
    state.nextBefore = page.next_before ?? null;
  } catch (e) {
    if (client.loggedIn) announce(errorText(e));
  }
  renderPane();
  scrollToEnd();
  markOpenRead();
  $('send-text').focus();
}

async function loadOlder() {
  const open = state.open;
  if (open?.kind !== 'chat' || state.nextBefore === null) return;
  const list = $('messages');
  const fromEnd = list.scrollHeight - list.scrollTop;
  try {
    const page = await client.history(open.id, state.nextBefore, 30);
    if (state.open?.id !== open.id) return;
    for (const m of page.messages) state.messages.set(m.message_id, m);
    state.nextBefore = page.next_before ?? null;
  } catch (e) {
    announce(errorText(e));
    return;
  }
  renderPane();
  list.scrollTop = list.scrollHeight - fromEnd; // keep the reader's place
  if (state.nextBefore === null) list.focus(); // the button is gone; stay in the pane
}

/** Marks the open direct conversation read up to its newest message. */
function markOpenRead() {
  const open = state.open;
  if (open?.kind !== 'chat') return;
  const newest = [...state.messages.values()].sort((a, b) => b.conv_seq - a.conv_seq)[0];
  if (!newest) return;
  const c = state.convs.find((x) => x.conversation_id === open.id);
  if (c && c.read_upto >= newest.conv_seq && c.unread === 0) return;
  if (c) {
    c.unread = 0;
    c.read_upto = Math.max(c.read_upto, newest.conv_seq);
    renderConversations();
  }
  client.markRead(open.id, newest.message_id).catch(() => {});
}

function openSystem() {
  stashDraft();
  state.open = { kind: 'system' };
  state.messages = new Map();
  state.nextBefore = null;
  renderConversations();
  renderPane();
  scrollToEnd();
  markSystemRead();
  $('pane-title').focus();
}

/** Back to the list (phone width): focus returns to the conversation that was open. */
function closePane() {
  stashDraft();
  const was = state.open;
  state.open = null;
  renderConversations();
  renderSystemBadge();
  renderPane();
  const button =
    was?.kind === 'chat'
      ? [...document.querySelectorAll('#conv-list button')].find((b) => b.dataset.conversation === was.id)
      : null;
  (button ?? $('system-item')).focus();
}

async function sendMessage(event) {
  event.preventDefault();
  const open = state.open;
  const input = $('send-text');
  const text = input.value.trim();
  if (open?.kind !== 'chat' || !text) return;
  const button = $('send-button');
  const error = $('send-error');
  error.textContent = '';
  button.disabled = true;
  // The answer may come after another conversation was opened: what it
  // changes belongs to this one.
  const here = () => state.open?.id === open.id;
  try {
    const r = await client.send(open.group ? { group: open.group } : open.peer, text);
    if (here()) input.value = '';
    else state.drafts.delete(open.id);
    if (!state.messages.has(r.message_id) && state.open?.id === r.conversation_id) {
      // Shown at once; the live `message.new` for it is recognised by id.
      const seqs = [...state.messages.values()].map((m) => m.conv_seq);
      state.messages.set(r.message_id, {
        message_id: r.message_id,
        conversation_id: r.conversation_id,
        conv_seq: seqs.length ? Math.max(...seqs) + 0.5 : 1,
        from: client.userId,
        to: open.group ? { group: open.group } : { user: open.peer },
        kind: 'chat',
        content: { text },
        sent_at: r.sent_at,
        pending: true,
      });
      renderPane();
      scrollToEnd();
    }
    refreshSoon();
  } catch (e) {
    if (here()) error.textContent = errorText(e);
    else state.drafts.set(open.id, { text, error: errorText(e) });
  } finally {
    button.disabled = false;
    if (here()) input.focus();
  }
}

/** Finds the user a "new chat" names: by username first, then by user id. */
async function findUser(name) {
  try {
    return await client.lookupUser({ username: name });
  } catch (e) {
    if (e.status !== 404) throw e;
  }
  try {
    return await client.lookupUser({ user_id: name });
  } catch (e) {
    if (e.status === 404) return null;
    throw e;
  }
}

async function newChat(event) {
  event.preventDefault();
  const input = $('newchat-user');
  const name = input.value.trim();
  const error = $('newchat-error');
  error.textContent = '';
  if (!USER_ID.test(name)) {
    error.textContent = t('center.newchat.bad');
    return;
  }
  let user;
  try {
    user = await findUser(name);
  } catch (e) {
    error.textContent = errorText(e);
    return;
  }
  if (!user) {
    // Nobody to talk to: no conversation is opened.
    error.textContent = t('center.newchat.unknown', { name });
    return;
  }
  if (user.user_id === client.userId) {
    error.textContent = t('center.newchat.self');
    return;
  }
  state.names.set(user.user_id, user.display_name || user.username);
  input.value = '';
  openConversation(user.user_id);
}

/** One inbox event from the WebSocket (each seq once, in order). */
function onEvent(event) {
  const d = event.data || {};
  switch (event.type) {
    case 'message.new': {
      const open = state.open;
      if (open?.kind === 'chat' && d.conversation_id === open.id) {
        const follow = nearEnd();
        // Replaces our own send shown early (same message id).
        state.messages.set(d.message_id, d);
        renderPane();
        if (follow || d.from === client.userId) scrollToEnd();
        if (d.from !== client.userId && !document.hidden) markOpenRead();
      } else if (d.from !== client.userId) {
        announce(t('center.received', { name: d.from }));
      }
      refreshSoon();
      break;
    }
    case 'message.recalled': {
      const m = state.messages.get(d.message_id);
      if (m) {
        m.recalled = true;
        m.content = null;
        renderPane();
      }
      refreshSoon();
      break;
    }
    case 'receipt.read':
      if (d.user_id === client.userId) refreshSoon();
      break;
    case 'notification.new':
    case 'broadcast.new': {
      if (!addSystemItem(event)) break;
      if (state.open?.kind === 'system') {
        const follow = nearEnd();
        renderPane();
        if (follow) scrollToEnd();
        if (!document.hidden) markSystemRead();
      }
      renderSystemBadge();
      const c = d.content && typeof d.content === 'object' ? d.content : {};
      announce(t('center.notified', { title: c.title ?? contentText(d.content) }));
      break;
    }
    case 'group.changed':
      // Created, joined, renamed or left: the list shows it.
      refreshSoon();
      break;
    default:
      // session.revoked of this session is handled by the client; other
      // sessions' revocations and unknown types need nothing here.
      break;
  }
}

// ---- wiring --------------------------------------------------------------------

function wire() {
  $('password-form').addEventListener('submit', passwordLogin);
  $('signup-toggle').addEventListener('click', () => {
    setSignup(!signingUp);
    $('login-username').focus();
  });
  onLangChange(() => setSignup(signingUp));
  $('qr-fresh').addEventListener('click', () => {
    qr.renewals = 0;
    startQr();
  });
  $('logout').addEventListener('click', async () => {
    stopLive();
    await client.logout();
    sessionEnded('loggedout');
  });
  $('newchat-form').addEventListener('submit', newChat);
  $('send-form').addEventListener('submit', sendMessage);
  $('system-item').addEventListener('click', openSystem);
  $('back').addEventListener('click', closePane);
  $('load-older').addEventListener('click', loadOlder);
  document.addEventListener('visibilitychange', () => {
    if (document.hidden || state.view !== 'center') return;
    if (state.open?.kind === 'system') markSystemRead();
    if (state.open?.kind === 'chat') markOpenRead();
  });
  // Another tab logged in or out, or changed the System section.
  window.addEventListener('storage', (event) => {
    if (state.view === 'center' && !client.loggedIn) sessionEnded('loggedout');
    else if (state.view === 'login' && client.loggedIn) enterCenter();
    else if (state.view === 'center' && event.key === SYSTEM_KEY + client.userId) {
      renderSystemBadge();
      if (state.open?.kind === 'system') renderPane();
    }
  });
  // Leaving the page closes the QR stream; coming back from the
  // back-forward cache opens a fresh one.
  window.addEventListener('pagehide', () => stopQr());
  window.addEventListener('pageshow', (event) => {
    if (event.persisted && state.view === 'login') startQr();
  });
}

applyI18n();
bindLanguageSelect($('lang'));
onLangChange(renderAll);
wire();
if (client.loggedIn) enterCenter();
else showLogin();
