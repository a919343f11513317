// ui.js — small DOM helpers shared by the console's pages (app.js, phone.js):
// element building without innerHTML (all text goes through textContent),
// the aria-live status line, error messages and time formatting.

import { t, lang, known } from './i18n.js';

export const $ = (id) => document.getElementById(id);

/** `h('button', {class: 'x', onclick: f}, 'text', child)` — builds an element. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on')) el.addEventListener(name.slice(2), value);
    else if (name === 'class') el.className = value;
    else if (name === 'dataset') Object.assign(el.dataset, value);
    else if (value === true) el.setAttribute(name, '');
    else el.setAttribute(name, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function show(el, visible = true) {
  el.hidden = !visible;
}

let clearTimer = null;

/** Says something in the page's polite aria-live status region (shown for a few seconds). */
export function announce(text) {
  const region = $('status');
  if (!region) return;
  // Clear first so that repeating the same text is announced again.
  region.textContent = '';
  clearTimeout(clearTimer);
  requestAnimationFrame(() => {
    region.textContent = text;
    clearTimer = setTimeout(() => {
      region.textContent = '';
    }, 6000);
  });
}

/**
 * Fills an unread badge: the number is shown, and a screen reader reads
 * `label` ("3 unread") instead. Returns the badge.
 */
export function fillBadge(badge, n, label) {
  badge.replaceChildren(
    h('span', { class: 'count', 'aria-hidden': 'true' }, String(n)),
    h('span', { class: 'visually-hidden' }, label),
  );
  return badge;
}

/**
 * A server's refusal in the page's language. The server words its
 * messages in English (they name the field and what is allowed), so an
 * English page shows them as they are, inside `format` (an i18n key with
 * {message}); any other language says what the error code means in a
 * sentence of its own, rather than quote English after a translated
 * preamble. `rejected` carries the reason of the business system's own
 * hook, in whatever language it wrote it, and is shown as it is.
 */
export function refusalText(code, message, format = 'error.generic') {
  if (code === 'rejected') return t('error.rejected', { message: message || '?' });
  if (lang() === 'en' && message) return t(format, { message });
  return t(known(`error.code.${code}`) ? `error.code.${code}` : 'error.code.other');
}

/** A readable message for an error thrown by the client. */
export function errorText(e) {
  if (!e || typeof e !== 'object') return t('error.generic', { message: String(e) });
  if (e.status === 0) return t('error.network');
  if (e.status === 429) return t('error.rate', { n: e.retryAfter ?? 60 });
  return refusalText(e.code, e.message);
}

/** A local date-time, short. */
export function formatTime(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return '';
  const locale = lang() === 'zh' ? 'zh-CN' : 'en';
  const today = new Date().toDateString() === date.toDateString();
  return today
    ? date.toLocaleTimeString(locale, { hour: '2-digit', minute: '2-digit' })
    : date.toLocaleString(locale, { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });
}

/** "just now" / "3 min ago" / a local time, for approximate times. */
export function relativeTime(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return '';
  const minutes = Math.floor((Date.now() - date.getTime()) / 60000);
  if (minutes < 1) return t('time.now');
  if (minutes < 60) return t('time.minutes', { n: minutes });
  return formatTime(iso);
}

/** The text of a message's JSON content: its `text`, a notification's title and body, or compact JSON. */
export function contentText(content) {
  if (content === null || content === undefined) return '';
  if (typeof content === 'string') return content;
  if (typeof content.text === 'string') return content.text;
  const parts = [content.title, content.body].filter((p) => typeof p === 'string');
  if (parts.length) return parts.join(' — ');
  return JSON.stringify(content);
}
