// console.test.mjs — browser tests of the unimsg web console, run by
// scripts/browser-test (from scripts/test) with node:test. Playwright
// (playwright-core) drives Debian's chromium against a real server:
//
//   UNIMSG_URL=http://127.0.0.1:PORT UNIMSG_ADMIN_PASSWORD=... node --test console.test.mjs
//
// The steps share one server, three browser contexts and their state, so
// they run in order; a failed step makes the later ones fail fast.
// Screenshots of every step go to UNIMSG_BROWSER_OUT (default
// target/browser-test-output).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import {
  HERE,
  BASE,
  OUT,
  TIMEOUT,
  IPHONE_UA,
  api,
  shot,
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

// Optional: a server with UNIMSG_AUTH__QR_TTL_SECS=3 and
// UNIMSG_AUTH__ACCESS_TTL_SECS=1, for the expiry and refresh tests.
const SHORT = (process.env.UNIMSG_SHORT_URL || '').replace(/\/$/, '');
const NO_SHORT = !SHORT && 'UNIMSG_SHORT_URL is not set';

const run = Math.random().toString(36).slice(2, 8);
const PASSWORD = 'correct horse battery';
const users = {
  alice: { username: `alice${run}`, display_name: 'Alice Liddell' },
  bob: { username: `bob${run}`, display_name: 'Bob 鲍勃' },
};

// ---- fixtures ----------------------------------------------------------------

let browser;
const ctx = {};
const pages = {};

before(async () => {
  mkdirSync(OUT, { recursive: true });
  // launch() gives the browser a fresh temporary profile (user-data dir),
  // removed on close; every context below is isolated inside it.
  browser = await launch();
  for (const [name, user] of Object.entries(users)) {
    const profileAnswer = await api('POST', '/v1/auth/register', {
      username: user.username,
      password: PASSWORD,
      display_name: user.display_name,
    });
    user.user_id = profileAnswer.user_id;
    assert.ok(user.user_id, `${name} has an id`);
  }
  // The phone: a narrow, touch, iPhone browser (so it logs in as `ios`
  // and the desktop's `web` session does not replace it).
  ctx.phone = await browser.newContext({
    viewport: { width: 375, height: 740 },
    userAgent: IPHONE_UA,
    isMobile: true,
    hasTouch: true,
    deviceScaleFactor: 2,
    locale: 'en-US',
  });
  ctx.desktop = await browser.newContext({ viewport: { width: 1280, height: 800 }, locale: 'en-US' });
  ctx.alice = await browser.newContext({ viewport: { width: 1280, height: 800 }, locale: 'en-US' });
  for (const name of Object.keys(ctx)) {
    ctx[name].setDefaultTimeout(TIMEOUT);
    pages[name] = await ctx[name].newPage();
    watch(pages[name], name);
  }
});

after(async () => {
  await browser?.close();
});

// ---- the scenario --------------------------------------------------------------

test('the console is served with its assets, types and caching headers', async () => {
  for (const [route, type] of [
    ['/', 'text/html'],
    ['/m/qr', 'text/html'],
    ['/console/app.js', 'text/javascript'],
    ['/console/unimsg.js', 'text/javascript'],
    ['/console/style.css', 'text/css'],
  ]) {
    const r = await fetch(BASE + route);
    await r.arrayBuffer(); // read every body: an unread one holds its connection open
    assert.equal(r.status, 200, route);
    assert.ok(r.headers.get('content-type').startsWith(type), `${route}: ${r.headers.get('content-type')}`);
    assert.equal(r.headers.get('cache-control'), 'no-cache', route);
    const etag = r.headers.get('etag');
    assert.ok(etag, `${route} has an ETag`);
    const again = await fetch(BASE + route, { headers: { 'if-none-match': etag } });
    await again.arrayBuffer();
    assert.equal(again.status, 304, `${route} revalidates`);
  }
  const page = await fetch(BASE + '/');
  await page.arrayBuffer();
  assert.match(page.headers.get('content-security-policy') || '', /frame-ancestors 'none'/);
  const missing = await fetch(BASE + '/console/nope.js');
  assert.equal(missing.status, 404);
  assert.equal((await missing.json()).error.code, 'not_found');
});

test('the i18n table has every key in English and Chinese', async () => {
  const { STRINGS } = await import(path.join(HERE, '..', '..', 'crates', 'http', 'console', 'i18n.js'));
  const en = Object.keys(STRINGS.en).sort();
  const zh = Object.keys(STRINGS.zh).sort();
  assert.deepEqual(zh, en);
  for (const key of en) assert.ok(STRINGS.zh[key].trim(), `zh ${key} is empty`);
  // Every key the pages and scripts name is in the table.
  const dir = path.join(HERE, '..', '..', 'crates', 'http', 'console');
  const used = new Set();
  for (const file of readdirSync(dir).filter((f) => /\.(js|html)$/.test(f) && f !== 'i18n.js')) {
    const text = readFileSync(path.join(dir, file), 'utf8');
    for (const m of text.matchAll(/data-i18n(?:-[a-z]+)?="([^"]+)"/g)) used.add(m[1]);
    for (const m of text.matchAll(/'((?:app|login|qr|phone|center|error|time|admin)\.[a-z.]+)'/g)) used.add(m[1]);
  }
  const missing = [...used].filter((key) => !(key in STRINGS.en));
  assert.deepEqual(missing, [], 'keys used but not in the table');
  assert.ok(used.size > 50, `found ${used.size} keys in use`);
  // Every error code the server can send has a sentence of its own
  // (`rejected` shows the hook's own reason instead).
  const doc = await (await fetch(`${BASE}/openapi.json`)).json();
  const codes = doc.components.schemas.ErrorCode.enum;
  assert.ok(codes.includes('bad_request'), `codes: ${codes}`);
  const unsaid = codes.filter((code) => code !== 'rejected' && !(`error.code.${code}` in STRINGS.en));
  assert.deepEqual(unsaid, [], 'error codes without a sentence');
});

test('unimsg.js: the pure helpers', async () => {
  const m = await import(path.join(HERE, '..', '..', 'crates', 'http', 'console', 'unimsg.js'));
  assert.equal(m.directConversationId('bob', 'alice'), 'd:alice:bob');
  assert.equal(m.directConversationId('alice', 'bob'), 'd:alice:bob');
  assert.equal(m.directConversationId('alice', 'alice'), null);
  assert.equal(m.detectPlatform(IPHONE_UA), 'ios');
  assert.equal(m.detectPlatform('Mozilla/5.0 (Linux; Android 14; Pixel 8) Mobile'), 'android');
  assert.equal(m.detectPlatform('Mozilla/5.0 (X11; Linux x86_64) Chrome/156'), 'web');
  assert.equal(m.detectPlatform('Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) Safari/605', 5), 'ios');
  assert.equal(m.detectPlatform('Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) Safari/605', 0), 'web');
  assert.match(m.randomId(), /^[0-9a-f]{32}$/);
  assert.deepEqual(m.QR_EVENTS, ['pending', 'scanned', 'confirmed', 'cancelled', 'expired']);
});

test('phone: password login on /m/qr, then the code entry form', async () => {
  const phone = pages.phone;
  await phone.goto(`${BASE}/m/qr`);
  await waitVisible(phone, '#phone-login');
  await assertAccessible(phone, 'phone login');
  await assertNoOverflow(phone, 'phone login at 375 px');
  await shot(phone, 'phone-login');
  await phone.fill('#phone-username', users.bob.username);
  await phone.fill('#phone-password', PASSWORD);
  await phone.click('#phone-login-submit');
  await waitVisible(phone, '#phone-code');
  await shot(phone, 'phone-code-entry');
  const session = await phone.evaluate(() => JSON.parse(localStorage.getItem('unimsg.tokens')));
  const sessions = await api('GET', '/v1/me/sessions', undefined, { token: session.access_token });
  const mine = sessions.sessions.find((s) => s.current);
  assert.equal(mine.platform, 'ios', 'an iPhone logs in as ios');
});

let desktopCode;

test('desktop: the login page shows a QR code and a human code', async () => {
  const desktop = pages.desktop;
  await desktop.goto(`${BASE}/`);
  await waitVisible(desktop, '#login-view');
  await desktop.waitForFunction(() => /^[2-9A-Z]{8}$/.test(document.querySelector('#qr-code')?.textContent ?? ''));
  desktopCode = await desktop.textContent('#qr-code');
  assert.match(desktopCode, /^[23456789ABCDEFGHJKMNPQRSTUVWXYZ]{8}$/);
  await waitText(desktop, '#qr-state', 'Waiting for your phone');
  const image = await desktop.waitForFunction(() => {
    const img = document.querySelector('#qr-image');
    return img && img.complete && img.naturalWidth > 0 && img.src.endsWith('/qr.svg');
  });
  assert.ok(image, 'the QR image loaded');
  const deviceId = await desktop.evaluate(() => localStorage.getItem('unimsg.device_id'));
  assert.ok(deviceId, 'a stable device id is kept');
  // The page keeps its ticket's secret: a reload within the ticket's life
  // shows the same code (and only this page's secret brings it back).
  const kept = await desktop.evaluate(() => JSON.parse(localStorage.getItem('unimsg.qr_ticket')));
  assert.ok(kept?.page_secret?.length >= 32, 'the page secret is kept');
  assert.equal(await desktop.getAttribute('#qr-code', 'data-ticket'), kept.ticket_id);
  await desktop.reload();
  await waitVisible(desktop, '#login-view');
  await desktop.waitForFunction(() => /^[2-9A-Z]{8}$/.test(document.querySelector('#qr-code')?.textContent ?? ''));
  assert.equal(await desktop.textContent('#qr-code'), desktopCode, 'a reload shows the same code');
  await waitText(desktop, '#qr-state', 'Waiting for your phone');
  await assertAccessible(desktop, 'desktop login');
  await assertNoOverflow(desktop, 'login page at 1280 px');
  await shot(desktop, 'desktop-login-qr');
});

test('phone: scanning the desktop code shows who is asking; the desktop sees "scanned"', async () => {
  const phone = pages.phone;
  await phone.goto(`${BASE}/m/qr?code=${desktopCode}`);
  await waitVisible(phone, '#phone-request');
  await waitText(phone, '#asking', users.bob.display_name);
  assert.equal(await phone.textContent('#req-platform'), 'web');
  assert.ok((await phone.textContent('#req-ip')).trim(), 'the IP address is shown');
  assert.ok((await phone.textContent('#req-time')).trim(), 'the time is shown');
  await assertAccessible(phone, 'phone request');
  await assertNoOverflow(phone, 'phone request at 375 px');
  await shot(phone, 'phone-who-is-asking');
  await waitText(pages.desktop, '#qr-state', users.bob.display_name);
  await shot(pages.desktop, 'desktop-scanned');
});

test('phone confirms; the desktop lands in the message center as bob', async () => {
  const { phone, desktop } = pages;
  await phone.click('#confirm');
  await waitVisible(phone, '#phone-result');
  await waitText(phone, '#result-text', 'signed in');
  await shot(phone, 'phone-confirmed');
  await waitVisible(desktop, '#center-view');
  await waitText(desktop, '#whoami', users.bob.display_name);
  await waitText(desktop, '#conn', 'Live');
  const tokens = await desktop.evaluate(() => JSON.parse(localStorage.getItem('unimsg.tokens')));
  assert.equal(tokens.user_id, users.bob.user_id);
  await assertAccessible(desktop, 'message center');
  await shot(desktop, 'desktop-message-center');
});

test('keyboard only: alice logs in with Tab, typing and Enter', async () => {
  const page = pages.alice;
  await page.goto(`${BASE}/`);
  await waitVisible(page, '#password-form');
  let reached = false;
  for (let i = 0; i < 8 && !reached; i += 1) {
    await page.keyboard.press('Tab');
    reached = await page.evaluate(() => document.activeElement?.id === 'login-username');
  }
  assert.ok(reached, 'Tab reaches the username field');
  await page.keyboard.type(users.alice.username);
  await page.keyboard.press('Tab');
  assert.equal(await page.evaluate(() => document.activeElement?.id), 'login-password', 'then the password');
  await page.keyboard.type(PASSWORD);
  await page.keyboard.press('Tab');
  assert.equal(await page.evaluate(() => document.activeElement?.id), 'login-submit', 'then the button');
  await page.keyboard.press('Shift+Tab');
  await page.keyboard.press('Enter');
  await waitVisible(page, '#center-view');
  await waitText(page, '#whoami', users.alice.display_name);
  await waitText(page, '#conn', 'Live');
  await shot(page, 'alice-keyboard-login');
});

test('a message from another context appears live on the desktop with an unread count', async () => {
  const { alice, desktop } = pages;
  await alice.fill('#newchat-user', users.bob.user_id);
  await alice.press('#newchat-user', 'Enter');
  // Opened by id: the lookup brings the name.
  await waitText(alice, '#pane-title', users.bob.display_name);
  await alice.fill('#send-text', 'Hello Bob, this is Alice');
  await alice.press('#send-text', 'Enter');
  await waitText(alice, '#messages .msg.mine', 'Hello Bob, this is Alice');

  const conv = `#conv-list button[data-peer="${users.alice.user_id}"]`;
  await waitText(desktop, conv, 'Hello Bob, this is Alice');
  await waitText(desktop, `${conv} .badge .count`, '1');
  await waitText(desktop, `${conv} .badge`, '1 unread'); // what a screen reader reads
  await shot(desktop, 'desktop-live-message-unread');
  await desktop.click(conv);
  await waitText(desktop, '#messages .msg.theirs', 'Hello Bob, this is Alice');
  await waitHidden(desktop, `${conv} .badge`);
  // The server agrees: nothing unread for bob.
  const tokens = await desktop.evaluate(() => JSON.parse(localStorage.getItem('unimsg.tokens')));
  const deadline = Date.now() + TIMEOUT;
  for (;;) {
    const { conversations } = await api('GET', '/v1/conversations', undefined, { token: tokens.access_token });
    if (conversations.every((c) => c.unread === 0)) break;
    assert.ok(Date.now() < deadline, 'the conversation is marked read on the server');
    await new Promise((r) => setTimeout(r, 200));
  }
  await shot(desktop, 'desktop-conversation-open');
});

test('phone: the send box reaches alice, and bob\'s desktop sees it live', async () => {
  const { phone, desktop, alice } = pages;
  await phone.goto(`${BASE}/`);
  await waitVisible(phone, '#center-view');
  await waitText(phone, '#conn', 'Live');
  const conv = `#conv-list button[data-peer="${users.alice.user_id}"]`;
  await waitVisible(phone, conv);
  await assertNoOverflow(phone, 'message center list at 375 px');
  await shot(phone, 'phone-center-list');
  await phone.click(conv);
  await waitText(phone, '#messages', 'Hello Bob, this is Alice');
  assert.equal(await visible(phone, '.sidebar'), false, 'at 375 px the pane replaces the list');
  await phone.fill('#send-text', 'Hi Alice — sent from my phone');
  await phone.click('#send-button');
  await waitText(phone, '#messages .msg.mine', 'sent from my phone');
  await assertNoOverflow(phone, 'conversation at 375 px');
  await shot(phone, 'phone-conversation-sent');
  await waitText(desktop, '#messages .msg.mine', 'sent from my phone');
  await waitText(alice, '#messages .msg.theirs', 'sent from my phone');
  await shot(desktop, 'desktop-own-message-from-phone');
  // Back to the list on the phone.
  await phone.click('#back');
  await waitVisible(phone, '#conv-list');
});

test('the JS client module works inside the page (sync, conversations, send)', async () => {
  const result = await pages.alice.evaluate(async ([bob, id]) => {
    const { Client } = await import('/console/unimsg.js');
    const client = new Client();
    const sync = await client.sync(0, 100);
    const { conversations } = await client.conversations();
    const sent = await client.send(bob, 'sent by the JS client', id);
    const again = await client.send(bob, 'sent by the JS client', id);
    return {
      types: sync.events.map((e) => e.type),
      next: sync.next_after,
      peers: conversations.map((c) => c.peer),
      same: sent.message_id === again.message_id,
      duplicate: again.duplicate,
    };
  }, [users.bob.user_id, `js-${run}`]);
  assert.ok(result.types.includes('message.new'), JSON.stringify(result));
  assert.ok(result.next > 0);
  assert.deepEqual(result.peers, [users.bob.user_id]);
  assert.ok(result.same && result.duplicate, 'a retried send is idempotent');
  await waitText(pages.desktop, '#messages .msg.theirs', 'sent by the JS client');
});

test('unimsg.js: pipelined sends over the live socket arrive in order', async () => {
  const result = await pages.alice.evaluate(async ([bob, tag]) => {
    const { Client } = await import('/console/unimsg.js');
    const client = new Client();
    let isOpen;
    const opened = new Promise((resolve) => { isOpen = resolve; });
    const live = client.connect(() => {}, { onState: (s) => s === 'open' && isOpen() });
    await opened;
    const texts = Array.from({ length: 20 }, (_, i) => `${tag} ${String(i).padStart(2, '0')}`);
    const answers = await Promise.all(texts.map((t) => live.send(bob, t)));
    live.close();
    return { texts, seqs: answers.map((a) => a.seq), types: answers.map((a) => a.type) };
  }, [users.bob.user_id, `pipe-${run}`]);
  assert.ok(result.types.every((t) => t === 'send.ok'), JSON.stringify(result));
  assert.deepEqual([...result.seqs].sort((a, b) => a - b), result.seqs, 'stored in the order sent');
  // Bob's inbox (the desktop is logged in as bob) has them in the same order.
  const order = await pages.desktop.evaluate(async (tag) => {
    const { Client } = await import('/console/unimsg.js');
    const client = new Client();
    const out = [];
    let after = 0;
    for (;;) {
      const page = await client.sync(after, 200);
      for (const e of page.events) {
        const text = e.data?.content?.text;
        if (typeof text === 'string' && text.startsWith(tag)) out.push(text);
      }
      after = page.next_after;
      if (!page.has_more) return out;
    }
  }, `pipe-${run}`);
  assert.deepEqual(order, result.texts);
});

test('history paging: "Load older messages" brings earlier messages', async () => {
  const alice = await api('POST', '/v1/auth/login', {
    username: users.alice.username,
    password: PASSWORD,
    platform: 'cli',
  });
  for (let i = 1; i <= 35; i += 1) {
    await api(
      'POST',
      '/v1/messages',
      { to: { user: users.bob.user_id }, content: { text: `numbered ${i}` }, client_msg_id: `page-${run}-${i}` },
      { token: alice.access_token },
    );
  }
  const desktop = pages.desktop;
  await waitText(desktop, '#messages', 'numbered 35');
  await desktop.reload();
  await waitVisible(desktop, '#center-view');
  await desktop.click(`#conv-list button[data-peer="${users.alice.user_id}"]`);
  await waitText(desktop, '#messages', 'numbered 35');
  assert.equal(await desktop.locator('#messages li', { hasText: 'Hello Bob, this is Alice' }).count(), 0);
  await waitVisible(desktop, '#load-older');
  await desktop.click('#load-older');
  await waitText(desktop, '#messages', 'Hello Bob, this is Alice');
  await waitHidden(desktop, '#load-older');
  await shot(desktop, 'desktop-history-paged');
});

let notificationId;

test('an admin notification appears with an unread badge that clears when opened', async () => {
  const desktop = pages.desktop;
  const count = () => desktop.evaluate(() => Number(document.querySelector('#system-badge .count')?.textContent || 0));
  const earlier = await count();
  const sent = await api(
    'POST',
    '/v1/admin/messages',
    {
      to: { users: [users.bob.user_id] },
      content: { title: 'Maintenance tonight', body: 'The service restarts at 23:00.' },
      from: 'ops',
    },
    { admin: true },
  );
  notificationId = sent.message_id;
  await waitText(desktop, '#system-preview', 'Maintenance tonight');
  await waitVisible(desktop, '#system-badge');
  const badge = await count();
  assert.ok(badge >= 1 && badge >= earlier, `the badge counts the notification (${badge})`);
  await shot(desktop, 'desktop-notification-badge');
  await desktop.click('#system-item');
  await waitText(desktop, '#messages', 'Maintenance tonight');
  await waitHidden(desktop, '#system-badge');
  await shot(desktop, 'desktop-notification-opened');
  // The server recorded the read.
  const deadline = Date.now() + TIMEOUT;
  for (;;) {
    const status = await api('GET', `/v1/admin/messages/${notificationId}/status`, undefined, { admin: true });
    if (status.read === 1) break;
    assert.ok(Date.now() < deadline, `the notification is read on the server (${JSON.stringify(status)})`);
    await new Promise((r) => setTimeout(r, 200));
  }
});

test('a broadcast appears in System with a badge; read state survives a reload', async () => {
  const desktop = pages.desktop;
  await desktop.click(`#conv-list button[data-peer="${users.alice.user_id}"]`);
  await api('POST', '/v1/admin/broadcasts', { content: { title: 'Version 2 is out', body: 'Enjoy.' } }, { admin: true });
  await waitText(desktop, '#system-badge .count', '1');
  await desktop.reload();
  await waitVisible(desktop, '#center-view');
  await waitText(desktop, '#system-badge .count', '1');
  await desktop.click('#system-item');
  await waitText(desktop, '#messages', 'Version 2 is out');
  await waitText(desktop, '#messages', 'Maintenance tonight');
  await waitHidden(desktop, '#system-badge');
  await desktop.reload();
  await waitVisible(desktop, '#center-view');
  await waitText(desktop, '#conn', 'Live');
  assert.equal(await visible(desktop, '#system-badge'), false, 'read stays read after a reload');
  await assertNoOverflow(desktop, 'message center at 1280 px');
  await shot(desktop, 'desktop-center-1280');
});

test('layouts at 375 px and 1280 px have no horizontal overflow', async () => {
  const page = await ctx.desktop.newPage();
  watch(page, 'desktop-2');
  for (const width of [375, 1280]) {
    await page.setViewportSize({ width, height: 800 });
    await page.goto(`${BASE}/`);
    await waitVisible(page, '#center-view');
    await assertNoOverflow(page, `message center at ${width} px`);
    await shot(page, `center-${width}`);
    await page.click('#system-item');
    await waitText(page, '#messages', 'Maintenance tonight');
    await assertNoOverflow(page, `system pane at ${width} px`);
    await shot(page, `system-${width}`);
  }
  await page.close();
  const fresh = await browser.newContext({ viewport: { width: 375, height: 740 } });
  const login = await fresh.newPage();
  watch(login, 'fresh');
  await login.goto(`${BASE}/`);
  await waitVisible(login, '#login-view');
  await login.waitForFunction(() => document.querySelector('#qr-code')?.textContent.length === 8);
  await assertNoOverflow(login, 'login page at 375 px');
  await shot(login, 'login-375');
  await fresh.close();
});

test('the language follows the browser and can be switched', async () => {
  const zh = await browser.newContext({ locale: 'zh-CN', viewport: { width: 1280, height: 800 } });
  const page = await zh.newPage();
  watch(page, 'zh');
  await page.goto(`${BASE}/`);
  await waitText(page, '#login-heading', '登录');
  assert.equal(await page.getAttribute('html', 'lang'), 'zh-CN');
  await page.waitForFunction(() => document.querySelector('#qr-code')?.textContent.length === 8);
  await shot(page, 'login-zh');
  await page.selectOption('#lang', 'en');
  await waitText(page, '#login-heading', 'Sign in');
  await page.reload();
  await waitText(page, '#login-heading', 'Sign in');
  await zh.close();
});

test('a QR login cancelled on the phone shows "cancelled" and offers a fresh code', async () => {
  const other = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await other.newPage();
  watch(page, 'cancel-desktop');
  await page.goto(`${BASE}/`);
  await page.waitForFunction(() => document.querySelector('#qr-code')?.textContent.length === 8);
  const code = await page.textContent('#qr-code');
  const phone = pages.phone;
  await phone.goto(`${BASE}/m/qr`);
  await waitVisible(phone, '#phone-code');
  await phone.fill('#code-input', code.toLowerCase());
  await phone.press('#code-input', 'Enter');
  await waitVisible(phone, '#phone-request');
  await phone.click('#cancel');
  await waitText(phone, '#result-text', 'Cancelled');
  await waitText(page, '#qr-state', 'cancelled');
  await waitVisible(page, '#qr-fresh');
  await shot(page, 'desktop-qr-cancelled');
  await page.click('#qr-fresh');
  await page.waitForFunction(
    (old) => {
      const now = document.querySelector('#qr-code')?.textContent ?? '';
      return now.length === 8 && now !== old;
    },
    code,
  );
  await waitText(page, '#qr-state', 'Waiting');
  // A used code cannot be scanned again.
  await phone.goto(`${BASE}/m/qr?code=${code}`);
  await waitVisible(phone, '#phone-code');
  await waitText(phone, '#code-error', 'code');
  await shot(phone, 'phone-used-code');
  await other.close();
});

test(
  'an expired code is replaced by a fresh one automatically',
  { skip: NO_SHORT },
  async () => {
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const page = await context.newPage();
    watch(page, 'short-qr');
    await page.goto(`${SHORT}/`);
    await page.waitForFunction(() => document.querySelector('#qr-code')?.textContent.length === 8);
    const first = await page.getAttribute('#qr-code', 'data-ticket');
    await waitText(page, '#qr-state', 'expired', 10000);
    await page.waitForFunction(
      (old) => {
        const el = document.querySelector('#qr-code');
        return el?.dataset.ticket && el.dataset.ticket !== old && el.textContent.length === 8;
      },
      first,
      { timeout: 10000 },
    );
    await shot(page, 'desktop-qr-renewed');
    // The fresh code is a live ticket: a logged-in user can scan it.
    const code = await page.textContent('#qr-code');
    const name = `carol${run}`;
    await api('POST', '/v1/auth/register', { username: name, password: PASSWORD }, { base: SHORT });
    const carol = await api(
      'POST',
      '/v1/auth/login',
      { username: name, password: PASSWORD, platform: 'ios' },
      { base: SHORT },
    );
    const asked = await api('POST', '/v1/auth/qr/scan', { code }, { token: carol.access_token, base: SHORT });
    assert.equal(asked.platform, 'web');
    await waitText(page, '#qr-state', 'Scanned by');
    await context.close();
  },
);

test('an expired access token is refreshed without leaving the page', { skip: NO_SHORT }, async () => {
  const dave = { username: `dave${run}`, password: PASSWORD };
  await api('POST', '/v1/auth/register', dave, { base: SHORT });
  const erin = await api('POST', '/v1/auth/register', { username: `erin${run}`, password: PASSWORD }, { base: SHORT });
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  watch(page, 'refresh');
  await page.goto(`${SHORT}/`);
  await page.fill('#login-username', dave.username);
  await page.fill('#login-password', dave.password);
  await page.press('#login-password', 'Enter');
  await waitText(page, '#conn', 'Live');
  const first = await page.evaluate(() => JSON.parse(localStorage.getItem('unimsg.tokens')));
  // Past the 1 s lifetime and the server's 5 s leeway: the next call gets 401.
  await page.waitForTimeout(7000);
  const stale = await fetch(`${SHORT}/v1/me`, { headers: { authorization: `Bearer ${first.access_token}` } });
  await stale.arrayBuffer();
  assert.equal(stale.status, 401, 'the first access token has expired');
  await page.fill('#newchat-user', erin.user_id);
  await page.press('#newchat-user', 'Enter');
  await page.fill('#send-text', 'after a refresh');
  await page.press('#send-text', 'Enter');
  await waitText(page, '#messages .msg.mine', 'after a refresh');
  const now = await page.evaluate(() => JSON.parse(localStorage.getItem('unimsg.tokens')));
  assert.notEqual(now.refresh_token, first.refresh_token, 'the pair was rotated');
  assert.equal(now.session_id, first.session_id, 'in the same session');
  assert.ok(await visible(page, '#center-view'), 'still in the message center');
  await context.close();
});

test('new chat takes a username, refuses one nobody has, and drafts stay with their conversation', async () => {
  const page = pages.alice;
  await page.goto(`${BASE}/`);
  await waitVisible(page, '#center-view');
  const carol = { username: `carol${run}`, display_name: 'Carol Chen' };
  const answer = await api('POST', '/v1/auth/register', { ...carol, password: PASSWORD });
  carol.user_id = answer.user_id;

  await page.fill('#newchat-user', `nobody${run}`);
  await page.press('#newchat-user', 'Enter');
  await waitText(page, '#newchat-error', `Nobody is called "nobody${run}"`);
  assert.ok(!(await page.textContent('#pane-title')).includes('nobody'), 'no chat was opened');

  await page.fill('#newchat-user', users.bob.username);
  await page.press('#newchat-user', 'Enter');
  await waitText(page, '#pane-title', 'Bob 鲍勃');
  await page.fill('#send-text', 'a draft for bob');

  await page.fill('#newchat-user', carol.username);
  await page.press('#newchat-user', 'Enter');
  await waitText(page, '#pane-title', 'Carol Chen');
  assert.equal(await page.inputValue('#send-text'), '', "bob's draft does not follow to carol");

  await page.fill('#newchat-user', users.bob.user_id);
  await page.press('#newchat-user', 'Enter');
  await waitText(page, '#pane-title', 'Bob 鲍勃');
  assert.equal(await page.inputValue('#send-text'), 'a draft for bob', 'the draft waited in its conversation');
  await shot(page, 'alice-draft-kept');
});

test('groups are in the conversation list and can be chatted in', async () => {
  const page = pages.alice;
  await page.goto(`${BASE}/`);
  await waitVisible(page, '#center-view');
  const bob = await api('POST', '/v1/auth/login', { username: users.bob.username, password: PASSWORD, platform: 'android' });
  const created = await api(
    'POST',
    '/v1/groups',
    { name: `Book club ${run}`, members: [users.alice.user_id] },
    { token: bob.access_token },
  );
  const group = created.group ?? created;
  await api(
    'POST',
    '/v1/messages',
    { to: { group: group.group_id }, kind: 'chat', content: { text: 'First meeting on Friday' }, client_msg_id: `g${run}` },
    { token: bob.access_token },
  );
  const item = `#conv-list button[data-group="${group.group_id}"]`;
  await waitText(page, item, `Book club ${run}`);
  await waitText(page, item, 'First meeting on Friday');
  await page.click(item);
  await waitText(page, '#pane-title', `Book club ${run}`);
  await waitText(page, '#messages', 'First meeting on Friday');
  // In a group the sender's name is shown.
  await waitText(page, '#messages .msg.theirs .who', users.bob.display_name);
  assert.ok(await visible(page, '#messages .msg.theirs .who'), 'the name is visible in a group');
  await page.fill('#send-text', 'I will bring the tea');
  await page.press('#send-text', 'Enter');
  await waitText(page, '#messages .msg.mine', 'I will bring the tea');
  const deadline = Date.now() + TIMEOUT;
  for (;;) {
    const history = await api('GET', `/v1/conversations/${encodeURIComponent(group.conversation_id)}/messages?limit=10`, undefined, { token: bob.access_token });
    if (history.messages.some((m) => m.content?.text === 'I will bring the tea' && m.from === users.alice.user_id)) break;
    assert.ok(Date.now() < deadline, 'the group got alice\'s message');
    await new Promise((r) => setTimeout(r, 200));
  }
  await shot(page, 'alice-group-chat');
});

test('a newcomer creates an account from the login page; a taken username is refused in words', async () => {
  const context = await browser.newContext({ viewport: { width: 375, height: 740 }, locale: 'en-US' });
  const page = await context.newPage();
  watch(page, 'signup');
  await page.goto(`${BASE}/`);
  await waitVisible(page, '#login-view');
  await page.click('#signup-toggle');
  await waitVisible(page, '#signup-display');
  await waitText(page, '#password-heading', 'Create an account');
  await page.fill('#login-username', `dora${run}`);
  await page.fill('#signup-display', 'Dora Explorer');
  await page.fill('#login-password', 'short');
  await page.press('#login-password', 'Enter');
  await waitText(page, '#login-error', 'at least 8 characters');
  await page.fill('#login-password', PASSWORD);
  await page.press('#login-password', 'Enter');
  await waitVisible(page, '#center-view');
  await waitText(page, '#whoami', 'Dora Explorer');
  await assertNoOverflow(page, 'message center after sign-up at 375 px');
  await shot(page, 'signup-done-375');
  await context.close();

  const again = await browser.newContext({ viewport: { width: 1280, height: 800 }, locale: 'zh-CN' });
  const second = await again.newPage();
  watch(second, 'signup-taken');
  await second.goto(`${BASE}/`);
  await waitVisible(second, '#login-view');
  await second.click('#signup-toggle');
  await second.fill('#login-username', `dora${run}`);
  await second.fill('#login-password', PASSWORD);
  await second.press('#login-password', 'Enter');
  await waitText(second, '#login-error', '该用户名已被占用');
  await shot(second, 'signup-taken-zh');
  await again.close();
});

test('in Chinese, a refusal from the server is said in Chinese, not quoted in English', async () => {
  const gus = { username: `gus${run}`, display_name: 'Gus' };
  const hal = { username: `hal${run}`, display_name: 'Hal' };
  for (const u of [gus, hal]) Object.assign(u, await api('POST', '/v1/auth/register', { ...u, password: PASSWORD }));
  const halTokens = await api('POST', '/v1/auth/login', { username: hal.username, password: PASSWORD, platform: 'web' });
  await api('POST', `/v1/blocks/${gus.user_id}`, undefined, { token: halTokens.access_token });

  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, locale: 'zh-CN' });
  const page = await context.newPage();
  watch(page, 'refusal-zh');
  await page.goto(`${BASE}/`);
  await waitVisible(page, '#password-form');
  await page.fill('#login-username', gus.username);
  await page.fill('#login-password', PASSWORD);
  await page.press('#login-password', 'Enter');
  await waitVisible(page, '#center-view');
  await page.fill('#newchat-user', hal.username);
  await page.press('#newchat-user', 'Enter');
  await waitText(page, '#pane-title', 'Hal');
  await page.fill('#send-text', 'hello');
  await page.press('#send-text', 'Enter');
  // The server's words are English ("this user does not accept this from you").
  await waitText(page, '#send-error', '你无权执行此操作。');
  const said = await page.textContent('#send-error');
  assert.ok(!/[A-Za-z]/.test(said), `no English inside the Chinese page: ${said}`);
  await shot(page, 'refusal-zh');
  await context.close();
});

test('logout and forced logout return to the login page', async () => {
  const { desktop, phone, alice } = pages;
  // Alice logs out herself.
  await alice.click('#logout');
  await waitVisible(alice, '#login-view');
  await waitText(alice, '#login-notice', 'logged out');
  // An admin forces bob offline: both of his browsers go back to login.
  await phone.goto(`${BASE}/`);
  await waitText(phone, '#conn', 'Live');
  await api('POST', `/v1/admin/users/${users.bob.user_id}/logout`, {}, { admin: true });
  await waitVisible(desktop, '#login-view');
  await waitVisible(phone, '#login-view');
  await waitText(desktop, '#login-notice', 'session has ended');
  await shot(desktop, 'desktop-after-forced-logout');
  assert.equal(await desktop.evaluate(() => localStorage.getItem('unimsg.tokens')), null);
});

test('no script errors or Content-Security-Policy refusals on any page', () => {
  assert.deepEqual(pageErrors, []);
});
