// admin.js — the admin console (`/admin`): sign-in with an admin id and its
// secret (exchanged for an admin token that lives in this page's memory
// only, never in storage), then four pages: the dashboard (the server's own
// /metrics and /readyz, refreshed while shown), users (search with paging,
// one user's facts and presence, disable / enable, log out, mint a token,
// delete), messages (a notification to listed users or a group, a
// broadcast, and each one's status followed live) and the audit log
// (filters, paging, the chain's verification and its head).
//
// What a credential's scopes do not allow is not offered: those buttons and
// forms are hidden. The server refuses such calls anyway.

import { t, lang, applyI18n, bindLanguageSelect, onLangChange } from './i18n.js';
import { $, h, show, announce, formatTime, refusalText } from './ui.js';

const PAGES = ['dashboard', 'users', 'messages', 'groups', 'audit', 'webhooks'];
const DASHBOARD_EVERY_MS = 5000;
// Every admin request is an audit entry: the node list is read less often
// than the public /metrics.
const NODES_EVERY_MS = 15000;
const STATUS_EVERY_MS = 2000;
const STATUS_FOR_MS = 120000;
const USER_ID = /^[A-Za-z0-9_.-]{1,64}$/;

/** What the dashboard shows: a label and how to read it from /metrics. */
const STATS = [
  ['admin.stat.online', (m) => m.sum('unimsg_hub_online_users')],
  ['admin.stat.connections', (m) => m.sum('unimsg_hub_connections')],
  ['admin.stat.http', (m) => m.sum('unimsg_http_connections')],
  ['admin.stat.messages', (m) => m.sum('unimsg_messages_sent_total')],
  ['admin.stat.deliveries', (m) => m.sum('unimsg_hub_deliveries_total')],
  ['admin.stat.groups', (m) => m.sum('unimsg_group_messages_total')],
  ['admin.stat.notifications', (m) => m.sum('unimsg_notifications_total')],
  ['admin.stat.broadcasts', (m) => m.sum('unimsg_broadcasts_total')],
  ['admin.stat.loginfail', (m) => m.sum('unimsg_login_failures_total')],
  ['admin.stat.limited', (m) => m.sum('unimsg_rate_limited_total')],
  ['admin.stat.alerts', (m) => m.sum('unimsg_security_alerts_total')],
  ['admin.stat.slow', (m) => m.sum('unimsg_hub_slow_consumer_disconnects')],
  ['admin.stat.webhooks', (m) => m.sum('unimsg_webhook_pending')],
  ['admin.stat.bus', (m) => m.sum('unimsg_bus_disconnects_total')],
];

const session = {
  token: null,
  adminId: null,
  scopes: [],
  expiresAt: 0,
};

const state = {
  page: 'dashboard',
  dashboardTimer: null,
  query: '',
  nextUser: null,
  selected: null, // the AdminUser shown in the detail card
  relations: null, // that user's friends and blocks
  sessions: null, // and their sessions: {user, list}
  auditNext: null,
  auditFilter: {},
  sent: [], // {message_id, what, at, status, timer, until}
  nodeReports: new Map(), // node_id -> the report before the latest, for rates
  nodesReadAt: 0,
  nodes: [], // the latest list read, shown again after a language switch
};

// ---- the admin API --------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** A fresh nonce and timestamp, so the console also works where replay protection is required. */
function replayHeaders() {
  return {
    'x-nonce': crypto.randomUUID(),
    'x-timestamp': String(Math.floor(Date.now() / 1000)),
  };
}

async function call(method, path, body) {
  const headers = { accept: 'application/json', ...replayHeaders() };
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (session.token) headers.authorization = `Bearer ${session.token}`;
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'omit',
    });
  } catch {
    throw new ApiError(0, 'network', t('error.network'));
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const error = data && data.error ? data.error : {};
    const failure = new ApiError(response.status, error.code || '', error.message || response.statusText);
    if (response.status === 401 && session.token) {
      signedOut('admin.signin.ended');
    }
    throw failure;
  }
  return data;
}

/** A readable message for a failed call, in the page's language. */
function failure(e) {
  if (!(e instanceof ApiError)) return t('error.generic', { message: String(e) });
  if (e.status === 0) return t('error.network');
  if (e.status === 403) return t('admin.error.scope');
  if (e.status === 404) return t('admin.error.notfound');
  if (e.status === 429) return t('admin.error.rate');
  // A 400's message says which field and what is allowed, in English.
  return refusalText(e.code, e.message, 'admin.error.server');
}

const can = (scope) => session.scopes.includes('admin') || session.scopes.includes(scope);

// ---- sign-in --------------------------------------------------------------

async function signIn(event) {
  event.preventDefault();
  const id = $('signin-id').value.trim();
  const secret = $('signin-secret').value;
  const error = $('signin-error');
  error.textContent = '';
  if (!id || !secret) {
    error.textContent = t('admin.signin.missing');
    return;
  }
  const submit = $('signin-submit');
  submit.disabled = true;
  submit.textContent = t('admin.signin.busy');
  try {
    const answer = await call('POST', '/v1/admin/token', { admin_id: id, password: secret });
    session.token = answer.token;
    session.adminId = id;
    session.scopes = answer.scopes || [];
    session.expiresAt = Date.now() + answer.expires_in * 1000;
    $('signin-secret').value = '';
    enterConsole();
  } catch (e) {
    error.textContent = e.status === 401 ? t('admin.signin.bad') : failure(e);
    $('signin-secret').focus();
  } finally {
    submit.disabled = false;
    submit.textContent = t('admin.signin.submit');
  }
}

function signedOut(noticeKey) {
  session.token = null;
  session.adminId = null;
  session.scopes = [];
  clearInterval(state.dashboardTimer);
  for (const item of state.sent) clearTimeout(item.timer);
  state.sent = [];
  state.nodes = [];
  state.nodeReports.clear();
  state.nodesReadAt = 0;
  $('node-list').replaceChildren();
  // Secrets shown once do not outlive the sign-in.
  $('hook-new-result').replaceChildren();
  $('hook-result').replaceChildren();
  show($('console-view'), false);
  show($('signout'), false);
  show($('whoami'), false);
  const notice = $('signin-notice');
  notice.textContent = noticeKey ? t(noticeKey) : '';
  notice.dataset.key = noticeKey || '';
  show(notice, Boolean(noticeKey));
  show($('signin-view'), true);
  $('signin-id').focus();
}

function enterConsole() {
  show($('signin-view'), false);
  show($('console-view'), true);
  show($('signout'), true);
  const who = $('whoami');
  who.textContent = t('admin.whoami', { id: session.adminId });
  show(who, true);
  // What this credential may not do is not offered.
  for (const el of document.querySelectorAll('[data-write]')) show(el, can(el.dataset.write));
  show($('messages-readonly'), !can('messages:send'));
  openPage('dashboard', false);
  announce(t('admin.signin.ok'));
}

// ---- pages ----------------------------------------------------------------

function openPage(page, focus = true) {
  state.page = page;
  for (const name of PAGES) show($(`page-${name}`), name === page);
  for (const tab of document.querySelectorAll('.tab')) {
    if (tab.dataset.page === page) tab.setAttribute('aria-current', 'page');
    else tab.removeAttribute('aria-current');
  }
  clearInterval(state.dashboardTimer);
  if (page === 'dashboard') {
    refreshDashboard();
    state.dashboardTimer = setInterval(refreshDashboard, DASHBOARD_EVERY_MS);
  } else if (page === 'users' && !$('user-rows').children.length) {
    searchUsers();
  } else if (page === 'audit' && !$('audit-rows').children.length) {
    loadAudit(true);
  } else if (page === 'webhooks') {
    loadWebhooks();
  }
  if (focus) $(`${page}-heading`).focus();
}

// ---- dashboard ------------------------------------------------------------

/** The Prometheus text format, read enough to sum a series over its labels. */
function parseMetrics(text) {
  const values = new Map();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (!match) continue;
    const value = Number(match[3]);
    if (!Number.isFinite(value)) continue;
    values.set(match[1], (values.get(match[1]) || 0) + value);
    if (match[2]) {
      for (const [, label, text] of match[2].matchAll(/([a-z_]+)="([^"]*)"/g)) {
        const key = `${match[1]}|${label}|${text}`;
        values.set(key, (values.get(key) || 0) + value);
      }
    }
  }
  return {
    sum: (name) => values.get(name) ?? 0,
    /** The series `name` summed per value of `label`: [[value, sum], …], largest first. */
    by: (name, label) =>
      [...values.entries()]
        .filter(([k]) => k.startsWith(`${name}|${label}|`))
        .map(([k, v]) => [k.split('|')[2], v])
        .filter(([, v]) => v > 0)
        .sort((a, b) => b[1] - a[1]),
  };
}

async function refreshDashboard() {
  const health = $('health');
  try {
    const ready = await fetch('/readyz', { credentials: 'omit' });
    health.textContent = ready.ok ? t('admin.health.ok') : t('admin.health.bad', { status: ready.status });
    health.dataset.state = ready.ok ? 'ok' : 'bad';
    const response = await fetch('/metrics', {
      credentials: 'omit',
      headers: session.token ? { authorization: `Bearer ${session.token}` } : {},
    });
    if (response.status === 401 || response.status === 404) {
      // metrics.token or metrics.listen keep /metrics from this page:
      // the node cards below still carry the main counts.
      $('stats').replaceChildren();
      $('stats-updated').textContent = t('admin.stats.elsewhere');
      await refreshNodesEvery();
      return;
    }
    if (!response.ok) throw new ApiError(response.status, '', response.statusText);
    const metrics = parseMetrics(await response.text());
    const split = (label) =>
      metrics
        .by('unimsg_live_connections', label)
        .map(([value, n]) => `${value} ${n.toLocaleString()}`)
        .join(' · ') || '—';
    // Each label and its value in a group of their own, so they stay together.
    const stat = (key, value, small) =>
      h(
        'div',
        { class: 'stat' },
        h('dt', {}, t(key)),
        h('dd', { dataset: { stat: key }, class: small ? 'small-stat' : '' }, value),
      );
    $('stats').replaceChildren(
      ...STATS.map(([key, read]) => stat(key, read(metrics).toLocaleString())),
      stat('admin.stat.platforms', split('platform'), true),
      stat('admin.stat.transports', split('transport'), true),
    );
    $('stats-updated').textContent = t('admin.stats.updated', { time: formatTime(new Date().toISOString()) });
  } catch (e) {
    health.textContent = failure(e);
    health.dataset.state = 'bad';
  }
  await refreshNodesEvery();
}

async function refreshNodesEvery() {
  if (Date.now() - state.nodesReadAt >= NODES_EVERY_MS) {
    state.nodesReadAt = Date.now();
    await refreshNodes();
  }
}

/** Every node's latest report, with rates from the one before it. */
async function refreshNodes() {
  const error = $('nodes-error');
  try {
    const { nodes } = await call('GET', '/v1/admin/nodes');
    error.textContent = '';
    state.nodes = nodes;
    $('node-list').replaceChildren(...nodes.map(renderNode));
  } catch (e) {
    error.textContent = failure(e);
  }
}

/** Per second between two reports of a node, or null before there are two. */
function rate(before, now, name) {
  if (!before) return null;
  const seconds = (Date.parse(now.reported_at) - Date.parse(before.reported_at)) / 1000;
  if (!(seconds > 0)) return null;
  return ((now.totals[name] ?? 0) - (before.totals[name] ?? 0)) / seconds;
}

function renderNode(node) {
  const seen = state.nodeReports.get(node.node_id);
  // Keep the older report while the same one is read again, so rates span two reports.
  const before = seen && seen.latest.reported_at !== node.reported_at ? seen.latest : seen?.before;
  state.nodeReports.set(node.node_id, { latest: node, before });
  const perSecond = (name) => {
    const value = rate(before, node, name);
    return value === null ? t('admin.nodes.rate.none') : value.toLocaleString(undefined, { maximumFractionDigits: 1 });
  };
  const silent = Date.now() - Date.parse(node.reported_at) > 15000;
  const reported = formatTime(node.reported_at);
  const live = node.live.map((l) => `${l.transport}/${l.platform} ${l.connections.toLocaleString()}`).join(' · ') || '—';
  const facts = [
    ['admin.nodes.reported', silent ? t('admin.nodes.silent', { time: reported }) : reported],
    ['admin.nodes.started', formatTime(node.started_at)],
    ['admin.nodes.connections', node.connections.toLocaleString()],
    ['admin.nodes.online', node.online_users.toLocaleString()],
    ['admin.nodes.live', live],
    ['admin.nodes.messages', perSecond('unimsg_messages_sent_total')],
    ['admin.nodes.deliveries', perSecond('unimsg_hub_deliveries_total')],
    ['admin.nodes.logins', perSecond('unimsg_logins_total')],
    ['admin.nodes.failures', (node.totals.unimsg_login_failures_total ?? 0).toLocaleString()],
    ['admin.nodes.store', node.store_ok ? t('admin.nodes.store.ok') : t('admin.nodes.store.bad')],
    ['admin.nodes.version', node.version],
  ];
  return h(
    'li',
    { class: 'card', dataset: { node: node.node_id, state: silent || !node.store_ok ? 'bad' : 'ok' } },
    h('strong', {}, node.node_id),
    h('dl', { class: 'facts' }, ...facts.flatMap(([key, value]) => [h('dt', {}, t(key)), h('dd', { dataset: { fact: key } }, value)])),
  );
}

// ---- users ----------------------------------------------------------------

async function searchUsers(more = false) {
  const error = $('search-error');
  error.textContent = '';
  if (!more) {
    state.query = $('search-query').value.trim();
    state.nextUser = null;
  }
  const params = new URLSearchParams({ limit: '20' });
  if (state.query) params.set('query', state.query);
  if (more && state.nextUser) params.set('after', state.nextUser);
  try {
    const page = await call('GET', `/v1/admin/users?${params}`);
    const rows = page.users.map((u) =>
      h(
        'tr',
        {},
        h('td', {}, h('button', { type: 'button', class: 'link', onclick: () => openUser(u.user_id) }, u.user_id)),
        h('td', {}, u.username),
        h('td', {}, u.display_name),
        h('td', {}, t(`admin.status.${u.status}`)),
      ),
    );
    if (more) $('user-rows').append(...rows);
    else $('user-rows').replaceChildren(...rows);
    state.nextUser = page.next_after ?? null;
    show($('users-more'), Boolean(state.nextUser));
    show($('users-empty'), !$('user-rows').children.length);
    if (!more) announce(t('admin.users.found', { n: page.users.length }));
  } catch (e) {
    error.textContent = failure(e);
  }
}

async function openUser(id) {
  $('user-error').textContent = '';
  $('user-result').textContent = '';
  try {
    const [user, presence, relations, sessions] = await Promise.all([
      call('GET', `/v1/admin/users/${encodeURIComponent(id)}`),
      call('GET', `/v1/admin/presence?user_ids=${encodeURIComponent(id)}`).catch(() => null),
      call('GET', `/v1/admin/relationships?user_ids=${encodeURIComponent(id)}`).catch(() => null),
      call('GET', `/v1/admin/users/${encodeURIComponent(id)}/sessions`).catch(() => null),
    ]);
    state.selected = user;
    state.relations = relations?.users?.[0] ?? null;
    state.sessions = sessions ? { user: user.user_id, list: sessions.sessions } : null;
    renderUser(presence?.users?.[0] ?? null);
    show($('user-detail'), true);
    $('user-detail-heading').focus();
  } catch (e) {
    $('search-error').textContent = failure(e);
  }
}

function renderUser(presence) {
  const u = state.selected;
  if (!u) return;
  $('user-detail-heading').textContent = u.display_name || u.username;
  const facts = [
    ['admin.users.id', u.user_id],
    ['admin.users.username', u.username],
    ['admin.users.status', t(`admin.status.${u.status}`)],
    ['admin.users.created', formatTime(u.created_at)],
    ['admin.users.password', u.has_password ? t('admin.yes') : t('admin.no')],
  ];
  if (presence) {
    const where = presence.platforms?.length ? presence.platforms.join(', ') : t('admin.users.offline');
    facts.push(['admin.users.online', where]);
  }
  const rel = state.relations?.user_id === u.user_id ? state.relations : null;
  if (rel) {
    facts.push(['admin.users.friends', rel.friends.length ? rel.friends.join(', ') : t('admin.none')]);
    facts.push(['admin.users.blocks', rel.blocks.length ? rel.blocks.join(', ') : t('admin.none')]);
  }
  const sessions = state.sessions?.user === u.user_id ? state.sessions.list : null;
  if (sessions) {
    const lines = sessions.map((x) =>
      t('admin.users.session', { platform: x.platform, device: x.device_id ?? '—', since: formatTime(x.created_at) }),
    );
    facts.push(['admin.users.sessions', lines.length ? lines.join(' · ') : t('admin.none')]);
  }
  $('user-facts').replaceChildren(...facts.flatMap(([key, value]) => [h('dt', {}, t(key)), h('dd', {}, value)]));
  $('user-toggle').textContent = u.status === 'disabled' ? t('admin.users.enable') : t('admin.users.disable');
}

async function userAction(what) {
  const u = state.selected;
  if (!u) return;
  const path = `/v1/admin/users/${encodeURIComponent(u.user_id)}`;
  $('user-error').textContent = '';
  const result = $('user-result');
  result.textContent = '';
  try {
    if (what === 'toggle') {
      const status = u.status === 'disabled' ? 'active' : 'disabled';
      state.selected = await call('PATCH', path, { status });
      renderUser(null);
      result.textContent = t(status === 'disabled' ? 'admin.users.disabled' : 'admin.users.enabled');
      refreshUserRow(state.selected);
    } else if (what === 'logout') {
      const answer = await call('POST', `${path}/logout`, {});
      result.textContent = t('admin.users.loggedout', { n: answer.revoked });
      state.sessions = { user: u.user_id, list: [] };
      renderUser(null);
    } else if (what === 'mint') {
      const pair = await call('POST', `${path}/tokens`, { platform: 'web' });
      result.replaceChildren(
        t('admin.users.minted'),
        ' ',
        h('code', { class: 'token', translate: 'no' }, pair.access_token),
      );
    } else if (what === 'delete') {
      if (!window.confirm(t('admin.users.confirmdelete', { id: u.user_id }))) return;
      await call('DELETE', path);
      result.textContent = t('admin.users.deleted', { id: u.user_id });
      state.selected = null;
      show($('user-detail'), false);
      await searchUsers();
      announce(t('admin.users.deleted', { id: u.user_id }));
      return;
    }
    announce(result.textContent);
  } catch (e) {
    $('user-error').textContent = failure(e);
  }
}

function refreshUserRow(u) {
  for (const row of $('user-rows').children) {
    if (row.firstChild?.textContent === u.user_id) row.children[3].textContent = t(`admin.status.${u.status}`);
  }
}

// ---- import ---------------------------------------------------------------

const IMPORT_BATCH = 1000;
const IMPORT_FIELDS = ['user_id', 'username', 'display_name', 'password'];

/** One CSV line's fields: commas split them; a field may be "quoted" (with "" for a quote). */
function csvFields(line) {
  const fields = [];
  let field = '';
  let quoted = false;
  for (let i = 0; i < line.length; i += 1) {
    const c = line[i];
    if (quoted) {
      if (c === '"' && line[i + 1] === '"') {
        field += '"';
        i += 1;
      } else if (c === '"') quoted = false;
      else field += c;
    } else if (c === '"') quoted = true;
    else if (c === ',') {
      fields.push(field);
      field = '';
    } else field += c;
  }
  fields.push(field);
  return fields.map((f) => f.trim());
}

/** The file's users with their line numbers, and the lines that are no user. */
function parseImport(name, text) {
  const lines = text.split(/\r?\n/).map((l, i) => [i + 1, l]).filter(([, l]) => l.trim());
  const users = [];
  const bad = [];
  const csv = /\.csv$/i.test(name) || (lines.length && !lines[0][1].trim().startsWith('{'));
  if (csv) {
    const [, header] = lines.shift() ?? [0, ''];
    const columns = csvFields(header).map((c) => c.toLowerCase());
    const unknown = columns.filter((c) => !IMPORT_FIELDS.includes(c));
    if (unknown.length || !columns.includes('user_id')) {
      bad.push([1, t('admin.import.header', { columns: IMPORT_FIELDS.join(', ') })]);
      return { users, bad };
    }
    for (const [n, line] of lines) {
      const values = csvFields(line);
      const user = {};
      columns.forEach((c, i) => {
        if (values[i]) user[c] = values[i];
      });
      if (user.display_name === undefined) user.display_name = user.username ?? user.user_id ?? '';
      users.push([n, user]);
    }
  } else {
    for (const [n, line] of lines) {
      try {
        const user = JSON.parse(line);
        if (!user || typeof user !== 'object' || Array.isArray(user)) throw new Error('not an object');
        users.push([n, user]);
      } catch {
        bad.push([n, t('admin.import.notjson')]);
      }
    }
  }
  return { users, bad };
}

async function importUsers(event) {
  event.preventDefault();
  const file = $('import-file').files?.[0];
  const summary = $('import-summary');
  const results = $('import-results');
  results.replaceChildren();
  if (!file) {
    summary.textContent = t('admin.import.nofile');
    $('import-file').focus();
    return;
  }
  const { users, bad } = parseImport(file.name, await file.text());
  const outcome = new Map(bad.map(([n, why]) => [n, { ok: false, why }]));
  $('import-submit').disabled = true;
  try {
    for (let i = 0; i < users.length; i += IMPORT_BATCH) {
      const batch = users.slice(i, i + IMPORT_BATCH);
      const answer = await call('POST', '/v1/admin/users', { users: batch.map(([, u]) => u) });
      for (const r of answer.results) {
        const [n] = batch[r.index];
        outcome.set(n, r.ok ? { ok: true } : { ok: false, why: refusalText(r.error?.code, r.error?.message, 'admin.import.why') });
      }
    }
  } catch (e) {
    summary.textContent = failure(e);
    return;
  } finally {
    $('import-submit').disabled = false;
  }
  const lines = [...outcome.entries()].sort((a, b) => a[0] - b[0]);
  const imported = lines.filter(([, o]) => o.ok).length;
  summary.textContent = t('admin.import.summary', { imported, failed: lines.length - imported });
  results.replaceChildren(
    ...lines.map(([n, o]) =>
      h(
        'li',
        { class: o.ok ? 'ok' : 'failed', dataset: { line: n } },
        o.ok ? t('admin.import.lineok', { n }) : t('admin.import.linefailed', { n, why: o.why }),
      ),
    ),
  );
  announce(summary.textContent);
}

// ---- messages -------------------------------------------------------------

function audience() {
  return document.querySelector('input[name="audience"]:checked')?.value || 'users';
}

function audienceChanged() {
  const kind = audience();
  show($('notify-to'), kind !== 'everyone');
  show($('notify-to-label'), kind !== 'everyone');
  $('notify-to-label').textContent = t(kind === 'group' ? 'admin.msg.to.group' : 'admin.msg.to.users');
}

async function sendNotification(event) {
  event.preventDefault();
  const error = $('notify-error');
  error.textContent = '';
  const title = $('notify-title').value.trim();
  const body = $('notify-body').value.trim();
  if (!title && !body) {
    error.textContent = t('admin.msg.empty');
    $('notify-title').focus();
    return;
  }
  const content = {};
  if (title) content.title = title;
  if (body) content.body = body;
  const kind = audience();
  let request;
  let path = '/v1/admin/messages';
  let what;
  if (kind === 'everyone') {
    path = '/v1/admin/broadcasts';
    request = { content };
    what = t('admin.msg.everyone');
  } else {
    const ids = $('notify-to').value.split(/[\s,]+/).filter(Boolean);
    if (!ids.length) {
      error.textContent = t(kind === 'group' ? 'admin.msg.nogroup' : 'admin.msg.nousers');
      $('notify-to').focus();
      return;
    }
    const bad = ids.find((id) => !USER_ID.test(id));
    if (bad) {
      error.textContent = t('admin.msg.badid', { id: bad });
      $('notify-to').focus();
      return;
    }
    if (kind === 'group' && ids.length > 1) {
      error.textContent = t('admin.msg.onegroup');
      $('notify-to').focus();
      return;
    }
    request = { to: kind === 'group' ? { group: ids[0] } : { users: ids }, content };
    what = kind === 'group' ? t('admin.msg.togroup', { id: ids[0] }) : ids.join(', ');
  }
  const submit = $('notify-submit');
  submit.disabled = true;
  try {
    const answer = await call('POST', path, request);
    const item = {
      message_id: answer.message_id,
      what,
      title: title || body,
      broadcast: kind === 'everyone',
      status: null,
      until: Date.now() + STATUS_FOR_MS,
      timer: null,
    };
    state.sent.unshift(item);
    $('notify-title').value = '';
    $('notify-body').value = '';
    renderSent();
    announce(t('admin.msg.done'));
    if (!item.broadcast) followStatus(item);
  } catch (e) {
    error.textContent = failure(e);
  } finally {
    submit.disabled = false;
  }
}

/** Polls a message's status for a while after it was sent. */
async function followStatus(item) {
  try {
    item.status = await call('GET', `/v1/admin/messages/${encodeURIComponent(item.message_id)}/status`);
    renderSent();
  } catch (e) {
    item.error = failure(e);
    renderSent();
    return;
  }
  const settled = item.status && item.status.read >= item.status.recipients;
  if (!settled && Date.now() < item.until && session.token) {
    item.timer = setTimeout(() => followStatus(item), STATUS_EVERY_MS);
  }
}

function renderSent() {
  show($('sent-none'), !state.sent.length);
  $('sent-list').replaceChildren(
    ...state.sent.map((item) => {
      const s = item.status;
      const line = item.broadcast
        ? t('admin.msg.broadcasted')
        : s
          ? t('admin.msg.status', { n: s.recipients, live: s.sent_live, delivered: s.delivered, read: s.read })
          : t('admin.msg.waiting');
      const perUser = s?.users?.length
        ? h(
            'ul',
            { class: 'per-user' },
            ...s.users.map((r) =>
              h(
                'li',
                { dataset: { user: r.user_id } },
                `${r.user_id}: `,
                r.read
                  ? t('admin.msg.read')
                  : r.delivered
                    ? t('admin.msg.delivered')
                    : r.sent_live
                      ? t('admin.msg.live')
                      : t('admin.msg.notyet'),
              ),
            ),
          )
        : null;
      return h(
        'li',
        { class: 'card', dataset: { message: item.message_id } },
        h('strong', {}, item.title),
        ' → ',
        item.what,
        h('p', { class: 'muted small status-line' }, item.error || line),
        perUser,
      );
    }),
  );
}

// ---- groups ---------------------------------------------------------------

async function lookUpGroup(event) {
  event.preventDefault();
  const id = $('group-id').value.trim();
  const error = $('group-error');
  error.textContent = '';
  if (!id) {
    error.textContent = t('admin.groups.missing');
    $('group-id').focus();
    return;
  }
  try {
    const detail = await call('GET', `/v1/admin/groups/${encodeURIComponent(id)}`);
    const g = detail.group;
    $('group-detail-heading').textContent = g.name;
    $('group-facts').replaceChildren(
      ...[
        ['admin.groups.id', g.group_id],
        ['admin.groups.owner', g.owner ?? '—'],
        ['admin.groups.count', String(g.member_count)],
        ['admin.groups.policy', g.join_policy],
        ['admin.users.created', formatTime(g.created_at)],
      ].flatMap(([key, value]) => [h('dt', {}, t(key)), h('dd', {}, value)]),
    );
    $('member-rows').replaceChildren(
      ...detail.members.map((m) =>
        h('tr', {}, h('td', {}, m.user_id), h('td', {}, m.display_name), h('td', {}, m.role)),
      ),
    );
    show($('group-detail'), true);
    $('group-detail-heading').focus();
  } catch (e) {
    show($('group-detail'), false);
    error.textContent = failure(e);
  }
}

// ---- audit ----------------------------------------------------------------

async function loadAudit(fresh) {
  const error = $('audit-error');
  error.textContent = '';
  if (fresh) {
    // datetime-local is the browser's local time; the API takes RFC 3339.
    const when = (id) => ($(id).value ? new Date($(id).value).toISOString() : '');
    state.auditFilter = {
      action: $('audit-action').value.trim(),
      actor: $('audit-actor').value.trim(),
      operation_id: $('audit-op').value.trim(),
      since: when('audit-since'),
      until: when('audit-until'),
    };
    state.auditNext = null;
  }
  const params = new URLSearchParams({ limit: '50' });
  for (const [key, value] of Object.entries(state.auditFilter)) if (value) params.set(key, value);
  if (!fresh && state.auditNext) params.set('after', String(state.auditNext));
  try {
    const [page, head] = await Promise.all([
      call('GET', `/v1/admin/audit?${params}`),
      call('GET', '/v1/admin/audit/head'),
    ]);
    const rows = page.entries.map((e) =>
      h(
        'tr',
        {},
        h('td', {}, String(e.id)),
        h('td', {}, formatTime(e.at)),
        h('td', {}, e.record.action ?? ''),
        h('td', {}, `${e.record.actor ?? ''}`),
        h('td', {}, e.record.outcome ?? ''),
      ),
    );
    if (fresh) $('audit-rows').replaceChildren(...rows);
    else $('audit-rows').append(...rows);
    state.auditNext = page.next_after ?? null;
    show($('audit-more'), Boolean(state.auditNext));
    $('audit-head').textContent = t('admin.audit.headis', { head: head.head });
    if (fresh) announce(t('admin.audit.found', { n: page.entries.length }));
  } catch (e) {
    error.textContent = failure(e);
  }
}

async function verifyAudit() {
  const verdict = $('audit-verdict');
  verdict.textContent = t('admin.audit.verifying');
  delete verdict.dataset.state;
  try {
    const result = await call('GET', '/v1/admin/audit/verify');
    verdict.textContent = result.intact
      ? t('admin.audit.intact', { n: result.entries ?? 0 })
      : t('admin.audit.broken', { where: result.broken ?? '?' });
    verdict.dataset.state = result.intact ? 'ok' : 'bad';
  } catch (e) {
    verdict.textContent = failure(e);
    verdict.dataset.state = 'bad';
  }
}

// ---- webhooks -------------------------------------------------------------

const hooks = { list: [], open: null };

async function loadWebhooks() {
  $('webhooks-error').textContent = '';
  try {
    hooks.list = (await call('GET', '/v1/admin/webhooks')).webhooks;
  } catch (e) {
    $('webhooks-error').textContent = failure(e);
    return;
  }
  show($('webhooks-none'), !hooks.list.length);
  $('webhook-rows').replaceChildren(
    ...hooks.list.map((w) =>
      h(
        'tr',
        {},
        h('td', {}, h('button', { type: 'button', class: 'link', onclick: () => openWebhook(w.webhook_id) }, w.url)),
        h('td', {}, w.events.join(', ')),
        h('td', {}, hookState(w)),
      ),
    ),
  );
  if (hooks.open) renderWebhook();
}

function hookState(w) {
  if (!w.enabled && w.disabled_reason) {
    // The server's reason is in English.
    return lang() === 'en' ? t('admin.hooks.disabledwhy', { why: w.disabled_reason }) : t('admin.hooks.disabledauto');
  }
  if (!w.enabled) return t('admin.hooks.disabled');
  if (w.failing_since) return t('admin.hooks.failing', { since: formatTime(w.failing_since) });
  return t('admin.hooks.enabled');
}

async function openWebhook(id) {
  hooks.open = id;
  $('hook-result').textContent = '';
  $('hook-error').textContent = '';
  await renderWebhook();
  show($('webhook-detail'), true);
  $('webhook-detail-heading').focus();
}

async function renderWebhook() {
  const w = hooks.list.find((x) => x.webhook_id === hooks.open);
  if (!w) return;
  $('webhook-detail-heading').textContent = w.url;
  $('hook-toggle').textContent = t(w.enabled ? 'admin.hooks.disable' : 'admin.hooks.enable');
  try {
    const page = await call('GET', `/v1/admin/webhooks/${encodeURIComponent(w.webhook_id)}/deliveries?limit=20`);
    $('delivery-rows').replaceChildren(
      ...page.deliveries.map((d) =>
        h(
          'tr',
          { dataset: { event: d.event_id } },
          h('td', {}, d.type, h('br'), h('span', { class: 'muted small' }, formatTime(d.created_at))),
          h('td', {}, t(`admin.hooks.status.${d.status}`)),
          h('td', {}, String(d.attempts)),
          h(
            'td',
            {},
            // The transport's error is in English: other languages say what it means.
            d.last_status
              ? `HTTP ${d.last_status}`
              : d.last_error
                ? lang() === 'en'
                  ? d.last_error
                  : t('admin.hooks.noanswer')
                : '—',
          ),
          h(
            'td',
            {},
            d.status === 'failed'
              ? h('button', { type: 'button', class: 'secondary', onclick: () => retryDelivery(d.event_id) }, t('admin.hooks.retry'))
              : null,
          ),
        ),
      ),
    );
  } catch (e) {
    $('hook-error').textContent = failure(e);
  }
}

async function hookAction(what) {
  const id = hooks.open;
  if (!id) return;
  const path = `/v1/admin/webhooks/${encodeURIComponent(id)}`;
  const result = $('hook-result');
  $('hook-error').textContent = '';
  result.textContent = '';
  try {
    if (what === 'test') {
      const answer = await call('POST', `${path}/test`, {});
      result.textContent = t('admin.hooks.queued', { n: answer.queued });
    } else if (what === 'toggle') {
      const w = hooks.list.find((x) => x.webhook_id === id);
      await call('PATCH', path, { enabled: !w.enabled });
      result.textContent = t(w.enabled ? 'admin.hooks.nowdisabled' : 'admin.hooks.nowenabled');
    } else if (what === 'rotate') {
      const answer = await call('POST', `${path}/secret`, {});
      result.replaceChildren(t('admin.hooks.newsecret'), ' ', h('code', { class: 'token', translate: 'no' }, answer.secret));
    } else if (what === 'replay') {
      const since = $('replay-since').value;
      if (!since) {
        $('hook-error').textContent = t('admin.hooks.nosince');
        $('replay-since').focus();
        return;
      }
      const answer = await call('POST', `${path}/replay`, { since: new Date(since).toISOString() });
      result.textContent = t('admin.hooks.queued', { n: answer.queued });
    }
    announce(result.textContent);
    await loadWebhooks();
  } catch (e) {
    $('hook-error').textContent = failure(e);
  }
}

/** A new endpoint from the form; its secret is shown once. */
async function addWebhook(event) {
  event.preventDefault();
  const result = $('hook-new-result');
  const error = $('hook-new-error');
  result.textContent = '';
  error.textContent = '';
  const url = $('hook-new-url').value.trim();
  if (!/^https?:\/\/\S+$/i.test(url)) {
    error.textContent = t('admin.hooks.new.badurl');
    $('hook-new-url').focus();
    return;
  }
  const events = $('hook-new-events')
    .value.split(/[\s,]+/)
    .filter(Boolean);
  const body = {
    url,
    events: events.length ? events : ['*'],
    description: $('hook-new-description').value.trim(),
    include_content: $('hook-new-content').checked,
  };
  $('hook-new-submit').disabled = true;
  try {
    const created = await call('POST', '/v1/admin/webhooks', body);
    $('hook-new-form').reset();
    result.replaceChildren(t('admin.hooks.new.done'), ' ', h('code', { class: 'token', translate: 'no' }, created.secret));
    announce(t('admin.hooks.new.done'));
    await loadWebhooks();
  } catch (e) {
    error.textContent = failure(e);
  } finally {
    $('hook-new-submit').disabled = false;
  }
}

async function retryDelivery(eventId) {
  const id = hooks.open;
  try {
    const answer = await call(
      'POST',
      `/v1/admin/webhooks/${encodeURIComponent(id)}/deliveries/${encodeURIComponent(eventId)}/retry`,
      {},
    );
    $('hook-result').textContent = t('admin.hooks.queued', { n: answer.queued });
    announce($('hook-result').textContent);
    await renderWebhook();
  } catch (e) {
    $('hook-error').textContent = failure(e);
  }
}

// ---- start ----------------------------------------------------------------

function rerender() {
  if (session.token) {
    $('whoami').textContent = t('admin.whoami', { id: session.adminId });
    renderUser(null);
    renderSent();
    audienceChanged();
    $('node-list').replaceChildren(...state.nodes.map(renderNode));
    if (state.page === 'dashboard') refreshDashboard();
    if (state.page === 'webhooks') loadWebhooks();
    const rows = $('user-rows').children.length;
    if (rows) searchUsers();
  }
  const notice = $('signin-notice');
  if (notice.dataset.key) notice.textContent = t(notice.dataset.key);
}

function start() {
  applyI18n();
  bindLanguageSelect($('lang'));
  onLangChange(rerender);
  $('signin-form').addEventListener('submit', signIn);
  $('signout').addEventListener('click', () => signedOut('admin.signin.out'));
  for (const tab of document.querySelectorAll('.tab')) tab.addEventListener('click', () => openPage(tab.dataset.page));
  $('hook-new-form').addEventListener('submit', addWebhook);
  $('search-form').addEventListener('submit', (e) => {
    e.preventDefault();
    searchUsers();
  });
  $('users-more').addEventListener('click', () => searchUsers(true));
  $('user-toggle').addEventListener('click', () => userAction('toggle'));
  $('user-logout').addEventListener('click', () => userAction('logout'));
  $('user-mint').addEventListener('click', () => userAction('mint'));
  $('user-delete').addEventListener('click', () => userAction('delete'));
  for (const radio of document.querySelectorAll('input[name="audience"]')) radio.addEventListener('change', audienceChanged);
  $('notify-form').addEventListener('submit', sendNotification);
  $('audit-form').addEventListener('submit', (e) => {
    e.preventDefault();
    loadAudit(true);
  });
  $('audit-more').addEventListener('click', () => loadAudit(false));
  $('audit-verify').addEventListener('click', verifyAudit);
  $('group-form').addEventListener('submit', lookUpGroup);
  $('import-form').addEventListener('submit', importUsers);
  $('hook-test').addEventListener('click', () => hookAction('test'));
  $('hook-toggle').addEventListener('click', () => hookAction('toggle'));
  $('hook-rotate').addEventListener('click', () => hookAction('rotate'));
  $('replay-form').addEventListener('submit', (e) => {
    e.preventDefault();
    hookAction('replay');
  });
  audienceChanged();
  signedOut(null);
}

start();
