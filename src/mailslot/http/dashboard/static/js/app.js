// The dashboard's shell: login, the header with its navigation and vhost choice, and a hash router.
// Pages are modules exporting render(view); a view owns its live timers and stops them when left.

import {api, credentials, forgetCredentials, setUnauthenticatedHandler, storeCredentials} from './api.js';
import {h, replace} from './dom.js';
import {Live} from './live.js';
import {flash, setFlashBox} from './ui.js';
import * as overview from './pages/overview.js';
import * as queues from './pages/queues.js';
import * as queue from './pages/queue.js';
import * as lists from './pages/lists.js';
import * as admin from './pages/admin.js';
import * as dlq from './pages/dlq.js';
import * as trace from './pages/trace.js';

const VHOST_KEY = 'mailslot.vhost';
const root = document.getElementById('app');

const session = {user: null, vhosts: [], view: null};

export function isAdmin() {
  return Boolean(session.user && session.user.tags.includes('administrator'));
}

export function isMonitor() {
  return Boolean(session.user && session.user.tags.some((t) => t === 'administrator' || t === 'monitoring'));
}

export function isPolicymaker() {
  return Boolean(session.user && session.user.tags.some((t) => t === 'administrator' || t === 'policymaker'));
}

// [pattern segments, module, handler name, shown in the menu as, admin only]
const ROUTES = [
  [['overview'], overview, 'render', 'Overview'],
  [['queues'], queues, 'render', 'Queues'],
  [['queue', ':vhost', ':name'], queue, 'render'],
  [['exchanges'], lists, 'exchanges', 'Exchanges'],
  [['exchange', ':vhost', ':name'], lists, 'exchange'],
  [['connections'], lists, 'connections', 'Connections'],
  [['connection', ':name'], lists, 'connection'],
  [['channels'], lists, 'channels', 'Channels'],
  [['channel', ':name'], lists, 'channel'],
  [['consumers'], lists, 'consumers', 'Consumers'],
  [['dlq'], dlq, 'list', 'Dead letters'],
  [['dlq', ':vhost', ':name'], dlq, 'render'],
  [['trace'], trace, 'render', 'Trace'],
  [['admin'], admin, 'render', 'Admin', true],
  [['admin', ':tab'], admin, 'render', null, true],
];

function match(path) {
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  if (!parts.length) parts.push('overview');
  for (const [pattern, module, handler, , adminOnly] of ROUTES) {
    if (pattern.length !== parts.length) continue;
    const params = {};
    if (pattern.every((p, i) => (p.startsWith(':') ? ((params[p.slice(1)] = parts[i]), true) : p === parts[i]))) {
      return {module, handler, params, adminOnly, section: pattern[0]};
    }
  }
  return null;
}

export function href(...segments) {
  return `#/${segments.map(encodeURIComponent).join('/')}`;
}

export function currentVhost() {
  const name = sessionStorage.getItem(VHOST_KEY) || '';
  return session.vhosts.includes(name) ? name : '';
}

export function vhostNames() {
  return session.vhosts;
}

class View {
  constructor(main, params) {
    this.main = main;
    this.params = params;
    this.lives = [];
    this.cleanups = [];
  }

  // A refresh run every second (one in flight at a time); the first run starts now.
  live(refresh, options) {
    const live = new Live(refresh, options);
    live.onError = (error) => {
      if (error.status === 404) { // the object of this page is gone: say so once, stop asking
        live.stop();
        this.main.prepend(h('p', {class: 'live-error gone', role: 'alert', 'data-testid': 'gone'},
          'This no longer exists: it was deleted or closed.'));
        return;
      }
      this.showError(error);
    };
    this.lives.push(live);
    return live.start();
  }

  showError(error) {
    let box = this.main.querySelector(':scope > .live-error');
    if (!box) {
      box = h('div', {class: 'live-error', role: 'alert'});
      this.main.prepend(box);
    }
    box.textContent = `Could not refresh: ${error.message}`;
    clearTimeout(this.errorTimer);
    this.errorTimer = setTimeout(() => box.remove(), 3000);
  }

  onLeave(cleanup) {
    this.cleanups.push(cleanup);
  }

  leave() {
    for (const live of this.lives) live.stop();
    for (const cleanup of this.cleanups) cleanup();
  }
}

function header(active) {
  const items = ROUTES.filter(([, , , label, adminOnly]) => label && (!adminOnly || isAdmin()))
    .map(([pattern, , , label]) => h('a', {href: `#/${pattern[0]}`, class: pattern[0] === active ? 'active' : null,
      'aria-current': pattern[0] === active ? 'page' : null, 'data-nav': pattern[0]}, label));
  const vhosts = h('select', {'aria-label': 'virtual host', 'data-testid': 'vhost', onchange: (e) => {
    sessionStorage.setItem(VHOST_KEY, e.target.value);
    route();
  }}, h('option', {value: ''}, 'all vhosts'),
  session.vhosts.map((name) => h('option', {value: name, selected: name === currentVhost()}, name)));
  return h('header', {class: 'top'},
    h('a', {class: 'brand', href: '#/overview'}, h('span', {class: 'logo', 'aria-hidden': 'true'}), 'mailslot'),
    h('nav', {class: 'main-nav', 'aria-label': 'pages'}, items),
    h('div', {class: 'who'}, vhosts,
      h('span', {class: 'user', 'data-testid': 'user'}, session.user.name),
      h('button', {class: 'link', 'data-testid': 'logout', onclick: logout}, 'Log out')));
}

async function route() {
  if (!session.user) return;
  if (session.view) session.view.leave();
  const found = match(location.hash.replace(/^#\/?/, ''));
  const main = h('main', {id: 'main'});
  const flashes = h('div', {class: 'flashes', 'aria-live': 'polite'});
  setFlashBox(flashes);
  replace(root, header(found ? found.section : ''), flashes, main);
  if (!found) {
    main.append(h('h1', {}, 'Not found'), h('p', {}, 'No such page. ', h('a', {href: '#/overview'}, 'Overview')));
    return;
  }
  if (found.adminOnly && !isAdmin()) {
    main.append(h('h1', {}, 'Administrators only'),
      h('p', {}, 'This page needs a user tagged administrator.'));
    return;
  }
  const view = new View(main, found.params);
  session.view = view;
  try {
    await found.module[found.handler](view);
  } catch (error) {
    main.append(h('p', {class: 'error', role: 'alert'}, error.message || String(error)));
  }
}

async function loadSession() {
  const user = await api.get('/whoami');
  const vhosts = await api.get('/vhosts?columns=name');
  session.user = user;
  session.vhosts = vhosts.map((v) => v.name);
}

export async function reloadVhosts() {
  session.vhosts = (await api.get('/vhosts?columns=name')).map((v) => v.name);
}

function logout() {
  forgetCredentials();
  if (session.view) session.view.leave();
  session.user = null;
  session.view = null;
  showLogin();
}

function showLogin(message = '') {
  const error = h('p', {class: 'error', role: 'alert', 'data-testid': 'login-error'}, message);
  const username = h('input', {name: 'username', autocomplete: 'username', required: true, autofocus: true});
  const password = h('input', {name: 'password', type: 'password', autocomplete: 'current-password'});
  const form = h('form', {class: 'login card', 'data-testid': 'login', onsubmit: async (event) => {
    event.preventDefault();
    storeCredentials(username.value, password.value);
    try {
      await loadSession();
    } catch (failure) {
      forgetCredentials();
      error.textContent = failure.status === 401 ? (failure.message === 'Login failed'
        ? 'Login failed: wrong user name or password.' : `Not allowed: ${failure.message}.`) : failure.message;
      return;
    }
    route();
  }},
  h('h1', {}, h('span', {class: 'logo', 'aria-hidden': 'true'}), 'mailslot'),
  h('label', {class: 'field'}, h('span', {}, 'User name'), username),
  h('label', {class: 'field'}, h('span', {}, 'Password'), password),
  h('button', {type: 'submit', class: 'primary'}, 'Log in'),
  error);
  replace(root, h('main', {class: 'login-page'}, form));
}

setUnauthenticatedHandler(() => {
  if (!session.user) return;
  forgetCredentials();
  if (session.view) session.view.leave();
  session.user = null;
  showLogin('Your session ended: log in again.');
});

window.addEventListener('hashchange', route);

async function start() {
  if (credentials()) {
    try {
      await loadSession();
      route();
      return;
    } catch {
      forgetCredentials();
    }
  }
  showLogin();
}

start().catch((error) => flash(error.message, 'error'));
