// cors.test.mjs — a browser app on another origin: a page served from
// http://127.0.0.1:UNIMSG_CORS_PORT (which scripts/browser-test lists in
// the main server's http.cors_origins) calls the user API and opens a
// WebSocket; the same page from http://localhost:PORT, an origin that is
// not listed, is refused both by the browser's CORS check and by the
// server's WebSocket origin check.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { BASE, TIMEOUT, api, launch } from './helpers.mjs';

const PORT = Number(process.env.UNIMSG_CORS_PORT || 0);
const SKIP = !PORT && 'UNIMSG_CORS_PORT is not set';
const run = Math.random().toString(36).slice(2, 8);

let browser;
let site;
let token;

before(async () => {
  if (SKIP) return;
  site = http.createServer((request, response) => {
    response.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    response.end('<!doctype html><html lang="en"><title>another app</title><p>another app</p></html>');
  });
  await new Promise((resolve) => site.listen(PORT, '127.0.0.1', resolve));
  browser = await launch();
  await api('POST', '/v1/auth/register', { username: `dora${run}`, password: 'correct horse battery' });
  const login = await api('POST', '/v1/auth/login', {
    username: `dora${run}`,
    password: 'correct horse battery',
    platform: 'web',
  });
  token = login.access_token;
});

after(async () => {
  await browser?.close();
  site?.close();
});

/** From a page of `origin`: the API call's status (or the error) and whether a WebSocket opened. */
async function tryFrom(origin) {
  const context = await browser.newContext();
  context.setDefaultTimeout(TIMEOUT);
  const page = await context.newPage();
  await page.goto(`${origin}/`);
  const result = await page.evaluate(
    async ([base, accessToken]) => {
      let api;
      try {
        const r = await fetch(`${base}/v1/me`, { headers: { authorization: `Bearer ${accessToken}` } });
        api = r.status;
      } catch (e) {
        api = `refused: ${e.name}`;
      }
      const ws = await new Promise((resolve) => {
        const socket = new WebSocket(`${base.replace('http', 'ws')}/v1/ws?access_token=${accessToken}`);
        socket.onopen = () => {
          socket.close();
          resolve('open');
        };
        socket.onerror = () => resolve('refused');
      });
      return { api, ws };
    },
    [BASE, token],
  );
  await context.close();
  return result;
}

test('a page on a listed origin calls the API and opens a WebSocket', { skip: SKIP }, async () => {
  assert.deepEqual(await tryFrom(`http://127.0.0.1:${PORT}`), { api: 200, ws: 'open' });
});

test('a page on another origin is refused both', { skip: SKIP }, async () => {
  const result = await tryFrom(`http://localhost:${PORT}`);
  assert.equal(result.api, 'refused: TypeError');
  assert.equal(result.ws, 'refused');
});
