// phone.js — the phone-side page of QR-code login (`/m/qr?code=XXXXXXXX`):
// sign in on the phone if needed, look the code up (scan), show who is
// asking (platform, device, IP, browser, time) and confirm or cancel.
// Without a code in the URL, the page asks for the code shown on the
// other screen.

import { Client, detectPlatform } from './unimsg.js';
import { t, applyI18n, bindLanguageSelect, onLangChange } from './i18n.js';
import { $, show, announce, errorText, formatTime, relativeTime } from './ui.js';

const client = new Client({ onSessionEnd: () => showLogin() });

/** What the page shows, so that a language switch can re-render it. */
const state = {
  step: 'busy', // busy | login | code | request | result
  code: normalizeCode(new URLSearchParams(location.search).get('code') || ''),
  me: null,
  request: null, // the scan answer
  result: null, // 'confirmed' | 'cancelled'
  busyText: 'phone.looking',
};

/** Codes are typed by people: ignore case, spaces and dashes. */
function normalizeCode(code) {
  return code.toUpperCase().replace(/[^0-9A-Z]/g, '');
}

/** "Chrome · Linux" from a user agent string. */
function describeAgent(ua) {
  if (!ua) return t('phone.unknown');
  const browser =
    (/Edg\//.test(ua) && 'Edge') ||
    (/OPR\//.test(ua) && 'Opera') ||
    (/Firefox\//.test(ua) && 'Firefox') ||
    (/(Chrome|Chromium|CriOS)\//.test(ua) && 'Chrome') ||
    (/Safari\//.test(ua) && 'Safari') ||
    (/MicroMessenger/.test(ua) && 'WeChat') ||
    null;
  const os =
    (/iPhone|iPad|iPod/.test(ua) && 'iOS') ||
    (/Android/.test(ua) && 'Android') ||
    (/Windows/.test(ua) && 'Windows') ||
    (/Mac OS X|Macintosh/.test(ua) && 'macOS') ||
    (/Linux|X11/.test(ua) && 'Linux') ||
    null;
  return [browser, os].filter(Boolean).join(' · ') || ua.slice(0, 60);
}

function setStep(step) {
  state.step = step;
  render();
}

function render() {
  show($('phone-login'), state.step === 'login');
  show($('phone-code'), state.step === 'code');
  show($('phone-request'), state.step === 'request');
  show($('phone-result'), state.step === 'result');
  show($('phone-busy'), state.step === 'busy');
  show($('switch'), Boolean(state.me) && state.step !== 'result' && state.step !== 'login');
  $('phone-busy').textContent = t(state.busyText);
  const r = state.request;
  if (r) {
    $('asking').textContent = t('phone.asking', { name: state.me?.display_name ?? '' });
    $('req-platform').textContent = r.platform || t('phone.unknown');
    $('req-ip').textContent = r.ip || t('phone.unknown');
    $('req-agent').textContent = describeAgent(r.user_agent);
    $('req-agent').title = r.user_agent || '';
    $('req-time').textContent = r.created_at
      ? `${relativeTime(r.created_at)} (${formatTime(r.created_at)})`
      : t('phone.unknown');
  }
  if (state.result) {
    $('result-text').textContent = t(state.result === 'confirmed' ? 'phone.confirmed' : 'phone.cancelled');
  }
}

function showLogin() {
  state.me = null;
  state.request = null;
  setStep('login');
  $('phone-username').focus();
}

function showCode(error = '') {
  state.request = null;
  setStep('code');
  $('code-error').textContent = error;
  const input = $('code-input');
  input.value = state.code;
  input.focus();
}

/** Looks the code up: who is asking? */
async function scan() {
  state.busyText = 'phone.looking';
  setStep('busy');
  try {
    state.request = await client.scan(state.code);
    setStep('request');
    announce($('asking').textContent);
    $('confirm').focus();
  } catch (e) {
    if (!client.loggedIn) return showLogin();
    if (e.status === 404 || e.status === 400) showCode(t('phone.code.bad'));
    else if (e.status === 409 || e.status === 410) showCode(t('phone.code.used'));
    else showCode(errorText(e));
  }
}

/** After a login, or on load with a live session. */
async function signedIn() {
  try {
    state.me = await client.me();
  } catch (e) {
    if (!client.loggedIn) return showLogin();
    state.busyText = 'error.network';
    return setStep('busy');
  }
  if (state.code) await scan();
  else showCode();
}

async function decide(action) {
  const r = state.request;
  if (!r) return;
  const buttons = [$('confirm'), $('cancel')];
  buttons.forEach((b) => (b.disabled = true));
  $('request-error').textContent = '';
  try {
    if (action === 'confirm') await client.confirm(r.ticket_id);
    else await client.cancel(r.ticket_id);
    state.result = action === 'confirm' ? 'confirmed' : 'cancelled';
    state.code = '';
    history.replaceState(null, '', '/m/qr'); // a reload must not scan a used code again
    setStep('result');
    announce($('result-text').textContent);
  } catch (e) {
    if (!client.loggedIn) return showLogin();
    $('request-error').textContent =
      e.status === 409 || e.status === 410 || e.status === 404 ? t('phone.code.used') : errorText(e);
  } finally {
    buttons.forEach((b) => (b.disabled = false));
  }
}

function wire() {
  $('phone-login').addEventListener('submit', async (event) => {
    event.preventDefault();
    const username = $('phone-username').value.trim();
    const password = $('phone-password').value;
    const error = $('phone-login-error');
    const button = $('phone-login-submit');
    if (!username || !password) {
      error.textContent = t('login.bad');
      return;
    }
    error.textContent = '';
    button.disabled = true;
    try {
      await client.login(username, password, detectPlatform());
      $('phone-password').value = '';
      announce(t('login.ok'));
      await signedIn();
    } catch (e) {
      error.textContent = e.status === 401 ? t('login.bad') : errorText(e);
    } finally {
      button.disabled = false;
    }
  });

  $('phone-code').addEventListener('submit', async (event) => {
    event.preventDefault();
    const code = normalizeCode($('code-input').value);
    if (!code) {
      $('code-error').textContent = t('phone.code.bad');
      return;
    }
    state.code = code;
    await scan();
  });

  $('confirm').addEventListener('click', () => decide('confirm'));
  $('cancel').addEventListener('click', () => decide('cancel'));
  $('switch').addEventListener('click', async () => {
    await client.logout();
    showLogin();
  });
}

applyI18n();
bindLanguageSelect($('lang'));
onLangChange(render);
wire();
if (client.loggedIn) signedIn();
else showLogin();
