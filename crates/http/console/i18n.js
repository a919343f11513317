// i18n.js — every user-visible string of the web console, in English and
// Chinese, in one table; plus the language choice (saved in localStorage,
// defaulting from navigator.language) and `t(key, params)` to look strings up.
// Elements carry `data-i18n="key"` (text), `data-i18n-placeholder`,
// `data-i18n-label` (aria-label) or `data-i18n-alt`; `applyI18n()` fills them.

export const STRINGS = {
  en: {
    'app.title': 'unimsg console',
    'phone.title': 'Confirm sign-in · unimsg',
    language: 'Language',
    'nav.skip': 'Skip to content',

    'login.heading': 'Sign in',
    'login.password.heading': 'With your password',
    'login.username': 'Username',
    'login.password': 'Password',
    'login.submit': 'Sign in',
    'login.busy': 'Signing in…',
    'login.bad': 'Wrong username or password.',
    'login.ok': 'Signed in.',

    'qr.heading': 'With your phone',
    'qr.help': 'Scan the QR code with a phone where you are signed in, or open {url} on it and type the code.',
    'qr.image': 'QR code for signing in',
    'qr.code': 'Code',
    'qr.loading': 'Getting a code…',
    'qr.waiting': 'Waiting for your phone…',
    'qr.expires': 'Expires in {time}',
    'qr.scanned': 'Scanned by {name}. Confirm on your phone.',
    'qr.confirmed': 'Confirmed. Signing you in…',
    'qr.cancelled': 'Sign-in was cancelled on the phone.',
    'qr.expired': 'The code expired. Here is a new one.',
    'qr.failed': 'The code cannot be used any more.',
    'qr.timeout': 'The code expired.',
    'qr.unavailable': 'QR sign-in is not available right now.',
    'qr.fresh': 'Get a new code',

    'phone.heading': 'Confirm a sign-in',
    'phone.login.help': 'Sign in on this phone first.',
    'phone.code.label': 'Code shown on the other screen',
    'phone.code.submit': 'Continue',
    'phone.code.bad': 'This code is not valid. Check it and try again.',
    'phone.code.used': 'This code was already used or has expired.',
    'phone.looking': 'Looking up the sign-in request…',
    'phone.asking': 'A device wants to sign in as {name}.',
    'phone.platform': 'Platform',
    'phone.ip': 'IP address',
    'phone.browser': 'Browser',
    'phone.time': 'Requested',
    'phone.confirm': 'Confirm sign-in',
    'phone.cancel': 'Cancel',
    'phone.confirmed': 'Done: the other device is now signed in.',
    'phone.cancelled': 'Cancelled: the other device was not signed in.',
    'phone.switch': 'Use another account',
    'phone.center': 'Open the message center',
    'phone.unknown': 'unknown',
    'phone.warning': 'Only confirm if you started this sign-in yourself.',

    'time.now': 'just now',
    'time.minutes': '{n} min ago',

    'center.heading': 'Messages',
    'center.me': 'Signed in as {name}',
    'center.logout': 'Log out',
    'center.conversations': 'Conversations',
    'center.none': 'No conversations yet.',
    'center.system': 'System',
    'center.system.help': 'Notifications and announcements',
    'center.system.none': 'No notifications.',
    'center.newchat': 'New chat',
    'center.newchat.user': 'User id',
    'center.newchat.open': 'Open',
    'center.newchat.self': 'That is your own user id.',
    'center.newchat.bad': 'A user id has letters, digits, ".", "_" or "-".',
    'center.myid': 'Your user id (share it to be messaged):',
    'center.pick': 'Choose a conversation.',
    'center.back': 'Back',
    'center.older': 'Load older messages',
    'center.empty': 'No messages yet. Say hello!',
    'center.message': 'Message',
    'center.send': 'Send',
    'center.sending': 'Sending…',
    'center.you': 'You',
    'center.recalled': '(message recalled)',
    'center.unread': '{n} unread',
    'center.notification': 'Notification',
    'center.broadcast': 'Announcement',
    'center.from': 'from {name}',
    'center.live': 'Live',
    'center.connecting': 'Connecting…',
    'center.offline': 'Offline',
    'center.received': 'New message from {name}.',
    'center.notified': 'New notification: {title}',
    'center.revoked': 'Your session has ended. Please sign in again.',
    'center.expired': 'Your session has expired. Please sign in again.',
    'center.loggedout': 'You are logged out.',

    'error.network': 'Cannot reach the server.',
    'error.rate': 'Too many attempts. Try again in {n} s.',
    'error.generic': 'Something went wrong: {message}',
  },
  zh: {
    'app.title': 'unimsg 控制台',
    'phone.title': '确认登录 · unimsg',
    language: '语言',
    'nav.skip': '跳到正文',

    'login.heading': '登录',
    'login.password.heading': '使用密码登录',
    'login.username': '用户名',
    'login.password': '密码',
    'login.submit': '登录',
    'login.busy': '正在登录…',
    'login.bad': '用户名或密码错误。',
    'login.ok': '已登录。',

    'qr.heading': '使用手机扫码登录',
    'qr.help': '请用已登录的手机扫描二维码，或在手机上打开 {url} 并输入验证码。',
    'qr.image': '登录二维码',
    'qr.code': '验证码',
    'qr.loading': '正在获取验证码…',
    'qr.waiting': '等待手机扫码…',
    'qr.expires': '{time} 后过期',
    'qr.scanned': '{name} 已扫码，请在手机上确认。',
    'qr.confirmed': '已确认，正在登录…',
    'qr.cancelled': '已在手机上取消登录。',
    'qr.expired': '验证码已过期，已为你换了一个新的。',
    'qr.failed': '此验证码已不能使用。',
    'qr.timeout': '验证码已过期。',
    'qr.unavailable': '扫码登录暂时不可用。',
    'qr.fresh': '获取新的验证码',

    'phone.heading': '确认登录',
    'phone.login.help': '请先在这部手机上登录。',
    'phone.code.label': '另一屏幕上显示的验证码',
    'phone.code.submit': '继续',
    'phone.code.bad': '验证码无效，请检查后重试。',
    'phone.code.used': '此验证码已被使用或已过期。',
    'phone.looking': '正在查询登录请求…',
    'phone.asking': '有设备请求以 {name} 的身份登录。',
    'phone.platform': '平台',
    'phone.ip': 'IP 地址',
    'phone.browser': '浏览器',
    'phone.time': '请求时间',
    'phone.confirm': '确认登录',
    'phone.cancel': '取消',
    'phone.confirmed': '完成：另一台设备已登录。',
    'phone.cancelled': '已取消：另一台设备未登录。',
    'phone.switch': '切换账号',
    'phone.center': '打开消息中心',
    'phone.unknown': '未知',
    'phone.warning': '只有在你本人发起登录时才确认。',

    'time.now': '刚刚',
    'time.minutes': '{n} 分钟前',

    'center.heading': '消息',
    'center.me': '当前用户：{name}',
    'center.logout': '退出登录',
    'center.conversations': '会话',
    'center.none': '还没有会话。',
    'center.system': '系统',
    'center.system.help': '通知和公告',
    'center.system.none': '没有通知。',
    'center.newchat': '发起聊天',
    'center.newchat.user': '用户 ID',
    'center.newchat.open': '打开',
    'center.newchat.self': '这是你自己的用户 ID。',
    'center.newchat.bad': '用户 ID 只能包含字母、数字、“.”、“_”或“-”。',
    'center.myid': '你的用户 ID（分享给他人以便收到消息）：',
    'center.pick': '请选择一个会话。',
    'center.back': '返回',
    'center.older': '加载更早的消息',
    'center.empty': '还没有消息，打个招呼吧！',
    'center.message': '消息',
    'center.send': '发送',
    'center.sending': '正在发送…',
    'center.you': '我',
    'center.recalled': '（消息已撤回）',
    'center.unread': '{n} 条未读',
    'center.notification': '通知',
    'center.broadcast': '公告',
    'center.from': '来自 {name}',
    'center.live': '已连接',
    'center.connecting': '正在连接…',
    'center.offline': '离线',
    'center.received': '收到 {name} 的新消息。',
    'center.notified': '新通知：{title}',
    'center.revoked': '你的会话已结束，请重新登录。',
    'center.expired': '你的会话已过期，请重新登录。',
    'center.loggedout': '你已退出登录。',

    'error.network': '无法连接服务器。',
    'error.rate': '尝试次数过多，请在 {n} 秒后重试。',
    'error.generic': '出错了：{message}',
  },
};

export const LANGUAGES = { en: 'English', zh: '中文' };
const KEY = 'unimsg.lang';
const listeners = [];

/** The language of a navigator.language-like tag: `zh` for any Chinese, else `en`. */
export function languageFor(tag) {
  return /^zh\b/i.test(tag || '') ? 'zh' : 'en';
}

let current = 'en';
try {
  current = globalThis.localStorage?.getItem(KEY) || languageFor(globalThis.navigator?.language);
  if (!STRINGS[current]) current = 'en';
} catch {
  current = 'en';
}

export function lang() {
  return current;
}

/** The string for `key` in the current language, with `{name}` placeholders filled. */
export function t(key, params = {}) {
  const text = STRINGS[current][key] ?? STRINGS.en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (whole, name) => (name in params ? String(params[name]) : whole));
}

/** Fills every `data-i18n*` element under `root` in the current language. */
export function applyI18n(root = document) {
  document.documentElement.lang = current === 'zh' ? 'zh-CN' : 'en';
  for (const el of root.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll('[data-i18n-placeholder]')) el.placeholder = t(el.dataset.i18nPlaceholder);
  for (const el of root.querySelectorAll('[data-i18n-label]')) el.setAttribute('aria-label', t(el.dataset.i18nLabel));
  for (const el of root.querySelectorAll('[data-i18n-alt]')) el.alt = t(el.dataset.i18nAlt);
}

/** Switches the language, saves the choice and re-renders. */
export function setLang(next) {
  if (!STRINGS[next] || next === current) return;
  current = next;
  try {
    globalThis.localStorage?.setItem(KEY, next);
  } catch {
    // Private mode: the choice lasts for this page only.
  }
  applyI18n();
  for (const fn of listeners) fn(next);
}

/** Runs `fn(lang)` after every language switch (to re-render dynamic text). */
export function onLangChange(fn) {
  listeners.push(fn);
}

/** Wires a `<select>` to the language choice. */
export function bindLanguageSelect(select) {
  select.replaceChildren(
    ...Object.entries(LANGUAGES).map(([code, name]) => {
      const option = document.createElement('option');
      option.value = code;
      option.textContent = name;
      option.lang = code === 'zh' ? 'zh-CN' : 'en';
      return option;
    }),
  );
  select.value = current;
  select.addEventListener('change', () => setLang(select.value));
}
