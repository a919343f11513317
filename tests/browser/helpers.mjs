// helpers.mjs — what the browser test files share: the server and browser
// they run against (from the environment scripts/browser-test sets), the
// API helper, screenshots, waits, and the layout, accessibility and
// script-error checks.

import assert from 'node:assert/strict';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const HERE = path.dirname(fileURLToPath(import.meta.url));
export const BASE = (process.env.UNIMSG_URL || '').replace(/\/$/, '');
export const ADMIN_PASSWORD = process.env.UNIMSG_ADMIN_PASSWORD || '';
export const OUT = process.env.UNIMSG_BROWSER_OUT || path.join(HERE, '..', '..', 'target', 'browser-test-output');
export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
export const TIMEOUT = 15000;

export const IPHONE_UA =
  'Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1';

if (!BASE) throw new Error('set UNIMSG_URL to the server under test (scripts/browser-test does)');
if (!ADMIN_PASSWORD) throw new Error('set UNIMSG_ADMIN_PASSWORD to the server admin password');

// ---- helpers --------------------------------------------------------------

export async function api(method, route, body, { token, admin = false, base = BASE } = {}) {
  const headers = { accept: 'application/json' };
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (token) headers.authorization = `Bearer ${token}`;
  if (admin) headers.authorization = `Basic ${Buffer.from(`admin:${ADMIN_PASSWORD}`).toString('base64')}`;
  const response = await fetch(base + route, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) throw new Error(`${method} ${route} → ${response.status} ${text}`);
  return data;
}

let shotNumber = 0;
/** A numbered screenshot in OUT; `prefix` tells the test files apart. */
export async function shot(page, name, prefix = '') {
  shotNumber += 1;
  const file = path.join(OUT, `${prefix}${String(shotNumber).padStart(2, '0')}-${name}.png`);
  await page.screenshot({ path: file });
  return file;
}

export async function waitText(page, selector, text, timeout = TIMEOUT) {
  try {
    await page.waitForFunction(
      ([sel, want]) => [...document.querySelectorAll(sel)].some((el) => el.textContent.includes(want)),
      [selector, text],
      { timeout },
    );
  } catch (e) {
    const got = await page
      .$$eval(selector, (els) => els.map((el) => el.textContent.trim()).join(' | '))
      .catch(() => '?');
    throw new Error(`"${text}" did not appear in ${selector} (it shows: ${got}): ${e.message}`);
  }
}

export const visible = (page, selector) => page.locator(selector).first().isVisible();

export async function waitVisible(page, selector, timeout = TIMEOUT) {
  await page.locator(selector).first().waitFor({ state: 'visible', timeout });
}

export async function waitHidden(page, selector, timeout = TIMEOUT) {
  await page.locator(selector).first().waitFor({ state: 'hidden', timeout });
}

/** No horizontal scrolling at this width. */
export async function assertNoOverflow(page, what) {
  const { scroll, inner } = await page.evaluate(() => ({
    scroll: document.documentElement.scrollWidth,
    inner: window.innerWidth,
  }));
  assert.ok(scroll <= inner, `${what}: the page is ${scroll}px wide in a ${inner}px window`);
}

/**
 * The accessibility smoke check of one page state: every visible form
 * control has a label, every button and image a text alternative, the
 * page a language and a live status region.
 */
export async function assertAccessible(page, what) {
  const problems = await page.evaluate(() => {
    const out = [];
    const shown = (el) => el.getClientRects().length > 0 && getComputedStyle(el).visibility !== 'hidden';
    for (const el of document.querySelectorAll('input, select, textarea')) {
      if (el.type === 'hidden') continue;
      const labelled =
        (el.labels && [...el.labels].some((l) => l.textContent.trim())) ||
        el.getAttribute('aria-label') ||
        el.getAttribute('aria-labelledby');
      if (!labelled) out.push(`no label: ${el.outerHTML.slice(0, 80)}`);
    }
    for (const el of document.querySelectorAll('button, a[href]')) {
      if (!shown(el)) continue;
      if (!(el.textContent.trim() || el.getAttribute('aria-label'))) out.push(`no text: ${el.outerHTML.slice(0, 80)}`);
    }
    for (const el of document.querySelectorAll('img')) {
      if (!el.hasAttribute('alt')) out.push(`no alt: ${el.outerHTML.slice(0, 80)}`);
    }
    for (const el of document.querySelectorAll('[role="button"], div[onclick], span[onclick]')) {
      out.push(`not a <button>: ${el.outerHTML.slice(0, 80)}`);
    }
    if (!document.documentElement.lang) out.push('no <html lang>');
    if (!document.querySelector('[aria-live], [role="status"], [role="log"], [role="alert"]')) out.push('no live region');
    const ids = [...document.querySelectorAll('[id]')].map((el) => el.id);
    const dup = ids.filter((id, i) => ids.indexOf(id) !== i);
    if (dup.length) out.push(`duplicate ids: ${dup.join(', ')}`);
    return out;
  });
  assert.deepEqual(problems, [], `${what}: accessibility problems`);
}

/** Collects script errors and CSP refusals of a page; they fail the run at the end. */
export const pageErrors = [];
export function watch(page, who) {
  page.on('pageerror', (e) => pageErrors.push(`${who}: ${e.message}`));
  page.on('console', (message) => {
    if (message.type() !== 'error') return;
    const text = message.text();
    // Refused HTTP calls (401 after logout, 404 probes) are logged by the
    // browser as "Failed to load resource"; they are expected. Script
    // errors and Content-Security-Policy refusals are not.
    if (/Failed to load resource|net::ERR_/.test(text)) return;
    pageErrors.push(`${who}: ${text}`);
  });
}

/** Debian's chromium, headless, with a fresh temporary profile. */
export function launch() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
      '--disable-quic',
    ],
  });
}
