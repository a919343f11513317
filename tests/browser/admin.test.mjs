// admin.test.mjs — browser tests of the admin console (/admin), run by
// scripts/browser-test after console.test.mjs against the same server:
// keyboard-only sign-in, each page at 1280 px and 375 px, in English and
// Chinese, a read-only credential that is offered no writes (and is
// refused by the server anyway). Screenshots go to UNIMSG_BROWSER_OUT
// with the prefix `admin-`.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import net from 'node:net';
import {
  BASE,
  ADMIN_PASSWORD,
  OUT,
  TIMEOUT,
  api,
  shot as shotIn,
  waitText,
  visible,
  waitVisible,
  waitHidden,
  assertNoOverflow,
  assertAccessible,
  watch,
  pageErrors,
  launch,
} from './helpers.mjs';

const shot = (page, name) => shotIn(page, name, 'admin-');
const run = Math.random().toString(36).slice(2, 8);
const PASSWORD = 'correct horse battery';
const READER = { id: `reader${run}`, secret: 'a long reader secret 123' };
const carol = { username: `carol${run}`, display_name: 'Carol 卡罗尔' };

let browser;
let context;
let page;

before(async () => {
  mkdirSync(OUT, { recursive: true });
  browser = await launch();
  const answer = await api('POST', '/v1/auth/register', {
    username: carol.username,
    password: PASSWORD,
    display_name: carol.display_name,
  });
  carol.user_id = answer.user_id;
  await api('POST', '/v1/admin/admins', { admin_id: READER.id, secret: READER.secret, scopes: ['users:read'] }, { admin: true });
  context = await browser.newContext({ viewport: { width: 1280, height: 800 }, locale: 'en-US' });
  context.setDefaultTimeout(TIMEOUT);
  page = await context.newPage();
  watch(page, 'admin');
});

after(async () => {
  await browser?.close();
});

/** Presses Tab until `selector` has the focus (at most 30 times). */
async function tabTo(p, selector) {
  for (let i = 0; i < 30; i += 1) {
    if (await p.evaluate((sel) => document.activeElement?.matches(sel) ?? false, selector)) return;
    await p.keyboard.press('Tab');
  }
  throw new Error(`Tab never reached ${selector}`);
}

async function userLogin(username) {
  return api('POST', '/v1/auth/login', { username, password: PASSWORD, platform: 'web' });
}

async function meStatus(token) {
  const r = await fetch(`${BASE}/v1/me`, { headers: { authorization: `Bearer ${token}` } });
  await r.arrayBuffer();
  return r.status;
}

test('the admin page is served like the others', async () => {
  for (const [route, type] of [
    ['/admin', 'text/html'],
    ['/console/admin.js', 'text/javascript'],
  ]) {
    const r = await fetch(BASE + route);
    await r.arrayBuffer();
    assert.equal(r.status, 200, route);
    assert.ok(r.headers.get('content-type').startsWith(type), route);
  }
  const r = await fetch(`${BASE}/admin`);
  await r.arrayBuffer();
  assert.match(r.headers.get('content-security-policy') || '', /frame-ancestors 'none'/);
});

test('signing in with the keyboard alone: a wrong secret is refused in words, the right one opens the dashboard', async () => {
  await page.goto(`${BASE}/admin`);
  await waitVisible(page, '#signin-view');
  await assertAccessible(page, 'admin sign-in');
  await tabTo(page, '#signin-id');
  await page.keyboard.type('admin');
  await page.keyboard.press('Tab');
  await page.keyboard.type('not the secret');
  await page.keyboard.press('Enter');
  await waitText(page, '#signin-error', 'Wrong admin id or secret.');
  await shot(page, 'signin-refused-1280');
  assert.equal(await page.evaluate(() => document.activeElement?.id), 'signin-secret');
  await page.keyboard.press('Control+A');
  await page.keyboard.type(ADMIN_PASSWORD);
  await page.keyboard.press('Enter');
  await waitVisible(page, '#page-dashboard');
  await waitText(page, '#whoami', 'admin');
  await waitText(page, '#health', 'ready');
  await waitText(page, '#stats', 'Users online on this node');
  await waitText(page, '#stats', 'Live connections by platform (this node)');
  // The node list: this single node, as it reported itself.
  await waitText(page, '#node-list [data-node="local"]', 'Live connections');
  await waitText(page, '#node-list [data-node="local"] [data-fact="admin.nodes.store"]', 'answers');
  // The token lives in memory only.
  const stored = await page.evaluate(() => JSON.stringify({ ...localStorage }) + JSON.stringify({ ...sessionStorage }));
  assert.ok(!/token|secret/i.test(stored), `nothing about the admin is stored: ${stored}`);
  await assertAccessible(page, 'dashboard');
  await assertNoOverflow(page, 'dashboard at 1280 px');
  await shot(page, 'dashboard-1280');
});

test('users: search, open with the keyboard, disable (the token stops working), enable, mint a token', async () => {
  const tokens = await userLogin(carol.username);
  assert.equal(await meStatus(tokens.access_token), 200);
  await page.click('.tab[data-page="users"]');
  await waitVisible(page, '#page-users');
  await page.fill('#search-query', `CAROL${run}`);
  await page.press('#search-query', 'Enter');
  await waitText(page, '#user-rows', carol.username);
  assert.equal(await page.locator('#user-rows tr').count(), 1, 'only carol matches');
  await tabTo(page, `#user-rows button`);
  await page.keyboard.press('Enter');
  await waitVisible(page, '#user-detail');
  await waitText(page, '#user-facts', carol.user_id);
  await waitText(page, '#user-facts', 'offline');
  await waitText(page, '#user-facts', 'Sessions');
  await waitText(page, '#user-facts', 'web (—) since');
  await assertAccessible(page, 'users');
  await shot(page, 'user-1280');

  await page.click('#user-toggle');
  await waitText(page, '#user-result', 'disabled');
  await waitText(page, '#user-rows', 'disabled');
  assert.equal(await meStatus(tokens.access_token), 401, 'disabling ended the session');
  await page.click('#user-toggle');
  await waitText(page, '#user-result', 'active again');

  await page.click('#user-mint');
  await waitVisible(page, '#user-result code.token');
  const minted = await page.textContent('#user-result code.token');
  assert.equal(await meStatus(minted.trim()), 200, 'the minted token works');
  await page.click('#user-logout');
  await waitText(page, '#user-result', 'sessions ended');
  assert.equal(await meStatus(minted.trim()), 401, 'log out everywhere ended it');
  await assertNoOverflow(page, 'users at 1280 px');
});

test("groups and relationships: a group with its members, a user's friends and blocks", async () => {
  const dan = `dan${run}`;
  await api('POST', '/v1/admin/users', { users: [{ user_id: dan, display_name: 'Dan' }] }, { admin: true });
  await api(
    'PUT',
    '/v1/admin/relationships',
    { ops: [{ user_id: carol.user_id, other_id: dan, op: 'friend' }] },
    { admin: true },
  );
  const tokens = await userLogin(carol.username);
  const created = await api('POST', '/v1/groups', { name: `Gardeners ${run}`, members: [dan] }, { token: tokens.access_token });
  const group = created.group ?? created;

  await page.click('.tab[data-page="users"]');
  await page.fill('#search-query', carol.username);
  await page.press('#search-query', 'Enter');
  await page.click('#user-rows button');
  await waitText(page, '#user-facts', dan);

  await page.click('.tab[data-page="groups"]');
  await waitVisible(page, '#page-groups');
  await page.click('#group-form button[type="submit"]');
  await waitText(page, '#group-error', 'Enter a group id.');
  await page.fill('#group-id', 'g_nosuchgroup');
  await page.press('#group-id', 'Enter');
  await waitText(page, '#group-error', 'Not found');
  await page.fill('#group-id', group.group_id);
  await page.press('#group-id', 'Enter');
  await waitText(page, '#group-detail-heading', `Gardeners ${run}`);
  await waitText(page, '#member-rows', carol.user_id);
  await waitText(page, '#member-rows', dan);
  await assertAccessible(page, 'groups');
  await assertNoOverflow(page, 'groups at 1280 px');
  await shot(page, 'groups-1280');
});

test('users are imported from a JSON Lines or CSV file with a result per line', async () => {
  await page.click('.tab[data-page="users"]');
  await page.click('details.import summary');
  const jsonl = [
    JSON.stringify({ user_id: `erin${run}`, display_name: 'Erin' }),
    JSON.stringify({ user_id: `erin${run}`, display_name: 'Erin again' }),
    'this is not json',
  ].join('\n');
  await page.setInputFiles('#import-file', { name: 'users.jsonl', mimeType: 'text/plain', buffer: Buffer.from(jsonl) });
  await page.click('#import-submit');
  await waitText(page, '#import-summary', '1 imported, 2 failed.');
  await waitText(page, '#import-results li[data-line="1"]', 'imported');
  assert.ok(
    (await page.textContent('#import-results li[data-line="2"]')).startsWith('line 2: '),
    'the taken id is refused on its line',
  );
  await waitText(page, '#import-results li[data-line="3"]', 'not a JSON object');

  const csv = ['user_id,display_name,username', `fay${run},"Fay, the Second",fay${run}`].join('\n');
  await page.setInputFiles('#import-file', { name: 'users.csv', mimeType: 'text/csv', buffer: Buffer.from(csv) });
  await page.click('#import-submit');
  await waitText(page, '#import-summary', '1 imported, 0 failed.');
  const fay = await api('GET', `/v1/admin/users/fay${run}`, undefined, { admin: true });
  assert.equal(fay.display_name, 'Fay, the Second', 'a quoted CSV field keeps its comma');
  await shot(page, 'import-1280');
});

test('messages: a notification to a listed user shows its status as it is delivered', async () => {
  await page.click('.tab[data-page="messages"]');
  await waitVisible(page, '#page-messages');
  await page.click('#notify-submit');
  await waitText(page, '#notify-error', 'Write a title or a text.');
  await page.fill('#notify-to', 'not an id!');
  await page.fill('#notify-title', 'Planned maintenance');
  await page.click('#notify-submit');
  await waitText(page, '#notify-error', 'is not an id');
  await page.fill('#notify-to', carol.user_id);
  await page.fill('#notify-body', 'Saturday 02:00 UTC');
  await page.click('#notify-submit');
  await waitText(page, '#sent-list', 'Planned maintenance');
  await waitText(page, '#sent-list .status-line', '1 recipients · 0 sent live (pushed to an open connection) · 0 delivered');
  // Carol's client acknowledges it: the status follows.
  const tokens = await userLogin(carol.username);
  const sync = await api('GET', '/v1/sync?after=0&limit=100', undefined, { token: tokens.access_token });
  const event = sync.events.find((e) => e.type === 'notification.new' && e.data.content?.title === 'Planned maintenance');
  assert.ok(event, 'carol has the notification');
  await api('POST', '/v1/ack', { seq: event.seq }, { token: tokens.access_token });
  await waitText(page, '#sent-list .status-line', '1 delivered');
  await waitText(page, '#sent-list .per-user', 'delivered');

  await page.check('input[name="audience"][value="everyone"]');
  await waitHidden(page, '#notify-to');
  await page.fill('#notify-title', 'Release 3.0');
  await page.click('#notify-submit');
  await waitText(page, '#sent-list', 'Stored once for every user');
  await assertAccessible(page, 'messages');
  await assertNoOverflow(page, 'messages at 1280 px');
  await shot(page, 'messages-1280');
});

test('audit: entries filtered by action, the chain verified, the head shown', async () => {
  await page.click('.tab[data-page="audit"]');
  await waitVisible(page, '#page-audit');
  await waitText(page, '#audit-rows', 'admin.request');
  await page.fill('#audit-action', 'auth.login');
  await page.click('#audit-form button[type="submit"]');
  // The unfiltered rows have logins too: wait for the filtered list itself.
  await page
    .waitForFunction(() => {
      const tds = [...document.querySelectorAll('#audit-rows tr td:nth-child(3)')];
      return tds.length > 0 && tds.every((td) => td.textContent === 'auth.login');
    })
    .catch(async () => {
      const actions = await page.$$eval('#audit-rows tr td:nth-child(3)', (tds) => tds.map((td) => td.textContent));
      assert.fail(`only logins: ${actions}`);
    });
  // A window in the future holds nothing; one from an hour ago the logins.
  const local = (ms) => new Date(ms - new Date().getTimezoneOffset() * 60000).toISOString().slice(0, 16);
  await page.fill('#audit-since', local(Date.now() + 3600 * 1000));
  await page.click('#audit-form button[type="submit"]');
  await waitText(page, '#status', '0 entries shown.');
  assert.equal(await page.locator('#audit-rows tr').count(), 0, 'nothing in the future');
  await page.fill('#audit-since', local(Date.now() - 3600 * 1000));
  await page.click('#audit-form button[type="submit"]');
  await waitText(page, '#audit-rows', 'auth.login');
  await page.click('#audit-verify');
  await waitText(page, '#audit-verdict', 'The chain is intact');
  await waitText(page, '#audit-head', ':');
  await assertAccessible(page, 'audit');
  await assertNoOverflow(page, 'audit at 1280 px');
  await shot(page, 'audit-1280');
});

test('webhooks: an endpoint, a test event that fails, its retry, a replay and a new secret', async () => {
  // A loopback port nothing listens on.
  const closed = await new Promise((resolve) => {
    const probe = net.createServer();
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
  const url = `http://127.0.0.1:${closed}/hook-${run}`;
  await page.click('.tab[data-page="webhooks"]');
  await waitVisible(page, '#page-webhooks');
  // Made from the page: a wrong URL is refused there, a good one is
  // added and its secret shown once.
  await page.click('#hook-new summary');
  await page.fill('#hook-new-url', 'example.com/no-scheme');
  await page.click('#hook-new-submit');
  await waitText(page, '#hook-new-error', 'starting with https://');
  await page.fill('#hook-new-url', url);
  await page.fill('#hook-new-description', 'from the console');
  await page.click('#hook-new-submit');
  await waitText(page, '#hook-new-result', 'shown only now');
  assert.match(await page.textContent('#hook-new-result code'), /^whsec_/, 'the secret is shown');
  await waitText(page, '#webhook-rows', url);
  const listed = await api('GET', '/v1/admin/webhooks', undefined, { admin: true });
  const created = listed.webhooks.find((w) => w.url === url);
  assert.ok(created, 'the endpoint exists');
  assert.deepEqual(created.events, ['*'], 'an empty event list means every type');
  assert.equal(created.description, 'from the console');
  const id = created.webhook_id;
  await page.click(`#webhook-rows button:text("${url}")`);
  await waitVisible(page, '#webhook-detail');
  await page.click('#hook-test');
  await waitText(page, '#hook-result', '1 deliveries queued.');
  // The endpoint refuses connections: after its one retry the test event is failed.
  const deadline = Date.now() + TIMEOUT;
  let failed;
  for (;;) {
    const page1 = await api('GET', `/v1/admin/webhooks/${id}/deliveries?status=failed`, undefined, { admin: true });
    failed = page1.deliveries[0];
    if (failed) break;
    assert.ok(Date.now() < deadline, 'the test delivery failed');
    await new Promise((r) => setTimeout(r, 200));
  }
  await page.click(`#webhook-rows button:text("${url}")`);
  const row = `#delivery-rows tr[data-event="${failed.event_id}"]`;
  await waitText(page, row, 'failed');
  await page.click(`${row} button`);
  await waitText(page, '#hook-result', '1 deliveries queued.');
  await page.click('#hook-rotate');
  await waitText(page, '#hook-result code.token', 'whsec_');
  const hourAgo = new Date(Date.now() - 3600 * 1000 - new Date().getTimezoneOffset() * 60000).toISOString().slice(0, 16);
  await page.fill('#replay-since', hourAgo);
  await page.click('#replay-form button[type="submit"]');
  await waitText(page, '#hook-result', 'deliveries queued.');
  await assertAccessible(page, 'webhooks');
  await assertNoOverflow(page, 'webhooks at 1280 px');
  await shot(page, 'webhooks-1280');
  await api('DELETE', `/v1/admin/webhooks/${id}`, undefined, { admin: true });
});

test('in Chinese: every page and the errors the page makes itself', async () => {
  await page.selectOption('#lang', 'zh');
  await waitText(page, '.tab[data-page="users"]', '用户');
  await page.click('.tab[data-page="messages"]');
  await page.check('input[name="audience"][value="users"]');
  await page.fill('#notify-to', '');
  await page.fill('#notify-title', '');
  await page.fill('#notify-body', '');
  await page.click('#notify-submit');
  await waitText(page, '#notify-error', '请填写标题或正文。');
  await shot(page, 'messages-zh-1280');
  for (const name of ['dashboard', 'users', 'audit']) {
    await page.click(`.tab[data-page="${name}"]`);
    await waitVisible(page, `#page-${name}`);
    await shot(page, `${name}-zh-1280`);
  }
  await waitText(page, '#stats', '本节点在线用户');
  await waitText(page, '#node-list [data-node="local"]', '实时连接');
  // A line the server refuses (the id is taken) says why in Chinese, not
  // in the server's English.
  await page.click('.tab[data-page="users"]');
  const details = await page.$('details.import');
  if (!(await details.evaluate((d) => d.open))) await page.click('details.import summary');
  const taken = JSON.stringify({ user_id: `erin${run}`, display_name: 'Erin' });
  await page.setInputFiles('#import-file', { name: 'users.jsonl', mimeType: 'text/plain', buffer: Buffer.from(taken) });
  await page.click('#import-submit');
  await waitText(page, '#import-summary', '导入 0 个，失败 1 个。');
  const why = await page.textContent('#import-results li[data-line="1"]');
  assert.ok(why.startsWith('第 1 行：') && !/[A-Za-z]/.test(why), `the line's reason in Chinese: ${why}`);
  await page.selectOption('#lang', 'en');
  await waitText(page, '.tab[data-page="users"]', 'Users');
});

test('keyboard only: every page is reached with Tab and Enter, and a user is found and opened', async () => {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  context.setDefaultTimeout(TIMEOUT);
  const p = await context.newPage();
  watch(p, 'admin-keyboard');
  const focused = () => p.evaluate(() => document.activeElement?.dataset?.page || document.activeElement?.id || '');
  // Presses Tab (at most 60 times) until `want` has the focus.
  const tabTo = async (want, what) => {
    for (let i = 0; i < 60; i += 1) {
      if ((await focused()) === want) return;
      await p.keyboard.press('Tab');
    }
    assert.fail(`Tab never reached ${what}`);
  };
  await p.goto(`${BASE}/admin`);
  await waitVisible(p, '#signin-view');
  await tabTo('signin-id', 'the admin id');
  await p.keyboard.type('admin');
  await p.keyboard.press('Tab');
  await p.keyboard.type(ADMIN_PASSWORD);
  await p.keyboard.press('Enter');
  await waitVisible(p, '#page-dashboard');
  for (const name of ['users', 'messages', 'groups', 'audit', 'webhooks', 'dashboard']) {
    await tabTo(name, `the ${name} tab`);
    await p.keyboard.press('Enter');
    await waitVisible(p, `#page-${name}`);
    assert.equal(await focused(), `${name}-heading`, `the ${name} page's heading takes the focus`);
  }
  await tabTo('users', 'the users tab');
  await p.keyboard.press('Enter');
  await tabTo('search-query', 'the search field');
  await p.keyboard.type(carol.username);
  await p.keyboard.press('Enter');
  await waitText(p, '#user-rows', carol.username);
  // The first result's button, then its facts.
  for (let i = 0; i < 60; i += 1) {
    if (await p.evaluate(() => document.activeElement?.closest('#user-rows') !== null)) break;
    await p.keyboard.press('Tab');
  }
  await p.keyboard.press('Enter');
  await waitVisible(p, '#user-detail');
  await waitText(p, '#user-facts', carol.username);
  await shot(p, 'keyboard-user-1280');
  await context.close();
});

test('at 375 px every page fits, in both languages', async () => {
  const narrow = await browser.newContext({ viewport: { width: 375, height: 740 }, isMobile: true, hasTouch: true });
  narrow.setDefaultTimeout(TIMEOUT);
  const p = await narrow.newPage();
  watch(p, 'admin-375');
  await p.goto(`${BASE}/admin`);
  await waitVisible(p, '#signin-view');
  await assertNoOverflow(p, 'sign-in at 375 px');
  await shot(p, 'signin-375');
  await p.fill('#signin-id', 'admin');
  await p.fill('#signin-secret', ADMIN_PASSWORD);
  await p.press('#signin-secret', 'Enter');
  await waitVisible(p, '#page-dashboard');
  for (const language of ['en', 'zh']) {
    await p.selectOption('#lang', language);
    for (const name of ['dashboard', 'users', 'messages', 'groups', 'audit', 'webhooks']) {
      await p.click(`.tab[data-page="${name}"]`);
      await waitVisible(p, `#page-${name}`);
      if (name === 'users') {
        await p.fill('#search-query', carol.username);
        await p.press('#search-query', 'Enter');
        await p.click('#user-rows button');
        await waitVisible(p, '#user-detail');
      }
      await assertNoOverflow(p, `${name} at 375 px (${language})`);
      await shot(p, `${name}-${language}-375`);
    }
  }
  await narrow.close();
});

test('a users:read credential is offered no writes, and the server refuses them', async () => {
  const reader = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const p = await reader.newPage();
  watch(p, 'admin-reader');
  await p.goto(`${BASE}/admin`);
  await p.fill('#signin-id', READER.id);
  await p.fill('#signin-secret', READER.secret);
  await p.press('#signin-secret', 'Enter');
  await waitVisible(p, '#page-dashboard');
  await p.click('.tab[data-page="users"]');
  await p.fill('#search-query', carol.username);
  await p.press('#search-query', 'Enter');
  await p.click('#user-rows button');
  await waitVisible(p, '#user-detail');
  for (const button of ['#user-toggle', '#user-logout', '#user-mint', '#user-delete']) {
    assert.equal(await visible(p, button), false, `${button} is not offered`);
  }
  assert.equal(await visible(p, '.tab[data-page="webhooks"]'), false, 'no webhooks page');
  await p.click('.tab[data-page="messages"]');
  assert.equal(await visible(p, '#notify-form'), false, 'no send form');
  await waitText(p, '#messages-readonly', 'only read');
  await shot(p, 'reader-messages-1280');
  // The same credential's token, used directly: refused.
  const token = await api('POST', '/v1/admin/token', { admin_id: READER.id, secret: READER.secret });
  const r = await fetch(`${BASE}/v1/admin/users/${carol.user_id}`, {
    method: 'PATCH',
    headers: { authorization: `Bearer ${token.token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ status: 'disabled' }),
  });
  await r.arrayBuffer();
  assert.equal(r.status, 403);
  await reader.close();
});

test('signing out forgets the token', async () => {
  await page.click('#signout');
  await waitVisible(page, '#signin-view');
  await waitText(page, '#signin-notice', 'signed out');
  assert.equal(await visible(page, '#console-view'), false);
});

test('no script errors or Content-Security-Policy refusals on the admin pages', () => {
  assert.deepEqual(pageErrors, []);
});
