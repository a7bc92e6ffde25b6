// Administration (administrators only; the router refuses the others): users, vhosts, permissions,
// policies, limits, and definitions export and import.

import {api, enc} from '../api.js';
import {append, h, json, num, replace} from '../dom.js';
import {reloadVhosts, vhostNames} from '../app.js';
import {pagedList} from '../list.js';
import {attempt, field, parseJson, pill, section, table, tabs} from '../ui.js';

const TABS = [['users', 'Users'], ['vhosts', 'Virtual hosts'], ['permissions', 'Permissions'], ['policies', 'Policies'],
  ['limits', 'Limits'], ['definitions', 'Definitions']];

function vhostSelect(name = 'vhost') {
  return h('select', {name}, vhostNames().map((v) => h('option', {value: v}, v)));
}

function form(testid, fields, label, submit) {
  const element = h('form', {class: 'inline-form', 'data-testid': testid, onsubmit: async (event) => {
    event.preventDefault();
    await attempt(async () => {
      await submit(element);
      element.reset(); // only once saved: a refused form keeps what was typed
    }, 'Saved.');
  }}, fields, h('button', {type: 'submit', class: 'primary'}, label));
  return element;
}

function deleteButton(what, path, done) {
  return h('button', {class: 'danger', 'data-testid': 'delete', onclick: async () => {
    if (!window.confirm(`Delete ${what}?`)) return;
    await attempt(() => api.del(path), 'Deleted.');
    done();
  }}, 'Delete');
}

// A small live list that is not paged by the API (permissions, limits, policies).
function liveTable(view, container, load, columns, options) {
  return view.live(async (signal) => replace(container, table(columns, await load(signal), options)));
}

function users(view) {
  let list = null;
  const refresh = () => list && list.refresh();
  const name = h('input', {name: 'name', required: true, autocomplete: 'off'});
  const password = h('input', {name: 'password', type: 'password', required: true, autocomplete: 'new-password'});
  const tags = h('input', {name: 'tags', placeholder: 'administrator, monitoring, management, policymaker'});
  list = pagedList(view, {
    title: 'Users', path: '/users', testid: 'users', empty: 'No users.', filter: true,
    columns: [
      {label: 'Name', sort: 'name', render: (u) => h('span', {class: 'name'}, u.name)},
      {label: 'Tags', render: (u) => (u.tags.length ? u.tags.map((t) => pill(t, t === 'administrator' ? 'warn' : '')) : 'none')},
      {label: 'Limits', opt: true, render: (u) => (Object.keys(u.limits || {}).length ? h('code', {}, JSON.stringify(u.limits)) : '–')},
      {label: '', render: (u) => deleteButton(`the user ${u.name}`, `/users/${enc(u.name)}`, refresh)},
    ],
    extra: section('Add or update a user', form('add-user', [field('Name', name), field('Password', password), field('Tags', tags)],
      'Save user', async () => {
        await api.put(`/users/${enc(name.value)}`, {password: password.value, tags: tags.value});
        refresh();
      })),
  });
}

function vhosts(view) {
  let list = null;
  const refresh = async () => {
    await reloadVhosts();
    if (list) list.refresh();
  };
  const name = h('input', {name: 'name', required: true});
  const description = h('input', {name: 'description'});
  list = pagedList(view, {
    title: 'Virtual hosts', path: '/vhosts', testid: 'vhosts', empty: 'No vhosts.',
    columns: [
      {label: 'Name', sort: 'name', render: (v) => h('span', {class: 'name'}, v.name)},
      {label: 'Description', key: 'description', opt: true},
      {label: 'Tracing', render: (v) => (v.tracing ? pill('on', 'good') : 'off')},
      {label: 'Messages', num: true, render: (v) => num(v.messages)},
      {label: '', render: (v) => deleteButton(`the vhost ${v.name} and everything in it`, `/vhosts/${enc(v.name)}`, refresh)},
    ],
    extra: section('Add a virtual host', form('add-vhost', [field('Name', name), field('Description', description)], 'Add vhost',
      async () => {
        await api.put(`/vhosts/${enc(name.value)}`, {description: description.value});
        await refresh();
      })),
  });
}

function permissions(view) {
  const body = h('div');
  const user = h('input', {name: 'user', required: true});
  const vhost = vhostSelect();
  const configure = h('input', {name: 'configure', value: '.*'});
  const write = h('input', {name: 'write', value: '.*'});
  const read = h('input', {name: 'read', value: '.*'});
  let live = null;
  append(view.main, h('h1', {}, 'Permissions'), body,
    section('Set permissions', form('set-permission', [field('User', user), field('Vhost', vhost), field('Configure', configure),
      field('Write', write), field('Read', read)], 'Set', async () => {
      await api.put(`/permissions/${enc(vhost.value)}/${enc(user.value)}`, {configure: configure.value, write: write.value, read: read.value});
      live.tick();
    })));
  live = liveTable(view, body, (signal) => api.get('/permissions', {signal}), [
    {label: 'User', render: (p) => h('span', {class: 'name'}, p.user)},
    {label: 'Vhost', key: 'vhost'},
    {label: 'Configure', render: (p) => h('code', {}, p.configure)},
    {label: 'Write', render: (p) => h('code', {}, p.write)},
    {label: 'Read', render: (p) => h('code', {}, p.read)},
    {label: '', render: (p) => deleteButton(`${p.user}'s permissions in ${p.vhost}`, `/permissions/${enc(p.vhost)}/${enc(p.user)}`, () => live.tick())},
  ], {testid: 'permissions', empty: 'No permissions.'});
}

function policies(view) {
  const body = h('div');
  const kind = h('select', {name: 'kind'}, h('option', {value: 'policies'}, 'policy'), h('option', {value: 'operator-policies'}, 'operator policy'));
  const vhost = vhostSelect();
  const name = h('input', {name: 'name', required: true});
  const pattern = h('input', {name: 'pattern', required: true, placeholder: '^orders\\.'});
  const applyTo = h('select', {name: 'apply-to'}, ['queues', 'exchanges', 'all', 'classic_queues', 'quorum_queues'].map((a) => h('option', {value: a}, a)));
  const priority = h('input', {name: 'priority', type: 'number', value: 0});
  const definition = h('textarea', {name: 'definition', rows: 2, required: true, placeholder: '{"max-length": 10000, "dead-letter-exchange": "dlx"}'});
  let live = null;
  append(view.main, h('h1', {}, 'Policies'), body,
    section('Add or update a policy', form('add-policy', [field('Kind', kind), field('Vhost', vhost), field('Name', name), field('Pattern', pattern),
      field('Apply to', applyTo), field('Priority', priority), field('Definition (JSON)', definition)], 'Save policy', async () => {
      await api.put(`/${kind.value}/${enc(vhost.value)}/${enc(name.value)}`, {pattern: pattern.value, 'apply-to': applyTo.value,
        priority: Number(priority.value), definition: parseJson(definition.value, 'definition')});
      live.tick();
    })));
  live = liveTable(view, body, async (signal) => {
    const mine = (await api.get('/policies', {signal})).map((p) => ({...p, kind: 'policies'}));
    const operator = (await api.get('/operator-policies', {signal})).map((p) => ({...p, kind: 'operator-policies'}));
    return [...mine, ...operator];
  }, [
    {label: 'Name', render: (p) => h('span', {class: 'name'}, p.name)},
    {label: 'Kind', render: (p) => (p.kind === 'policies' ? 'policy' : pill('operator', 'warn'))},
    {label: 'Vhost', key: 'vhost', opt: true},
    {label: 'Pattern', render: (p) => h('code', {}, p.pattern)},
    {label: 'Apply to', key: 'apply-to', opt: true},
    {label: 'Priority', key: 'priority', num: true, opt: true},
    {label: 'Definition', render: (p) => h('pre', {}, json(p.definition))},
    {label: '', render: (p) => deleteButton(`the policy ${p.name}`, `/${p.kind}/${enc(p.vhost)}/${enc(p.name)}`, () => live.tick())},
  ], {testid: 'policies', empty: 'No policies.'});
}

function limits(view) {
  const vhostBody = h('div');
  const userBody = h('div');
  const vhost = vhostSelect();
  const vhostLimit = h('select', {name: 'limit'}, ['max-connections', 'max-queues'].map((n) => h('option', {value: n}, n)));
  const vhostValue = h('input', {name: 'value', type: 'number', min: -1, required: true});
  const user = h('input', {name: 'user', required: true});
  const userLimit = h('select', {name: 'limit'}, ['max-connections', 'max-channels'].map((n) => h('option', {value: n}, n)));
  const userValue = h('input', {name: 'value', type: 'number', min: -1, required: true});
  let live = null;
  const rows = (docs, who) => docs.flatMap((d) => Object.entries(d.value || {}).map(([limit, value]) => ({who: d[who], limit, value})));
  append(view.main, h('h1', {}, 'Limits'),
    section('Virtual host limits', vhostBody, form('set-vhost-limit', [field('Vhost', vhost), field('Limit', vhostLimit), field('Value', vhostValue)],
      'Set', async () => {
        await api.put(`/vhost-limits/${enc(vhost.value)}/${enc(vhostLimit.value)}`, {value: Number(vhostValue.value)});
        live.tick();
      })),
    section('User limits', userBody, form('set-user-limit', [field('User', user), field('Limit', userLimit), field('Value', userValue)],
      'Set', async () => {
        await api.put(`/user-limits/${enc(user.value)}/${enc(userLimit.value)}`, {value: Number(userValue.value)});
        live.tick();
      })));
  const columns = (kind) => [
    {label: kind === 'vhost' ? 'Vhost' : 'User', render: (r) => h('span', {class: 'name'}, r.who)},
    {label: 'Limit', key: 'limit'},
    {label: 'Value', num: true, render: (r) => num(r.value)},
    {label: '', render: (r) => deleteButton(`the ${r.limit} limit of ${r.who}`, `/${kind}-limits/${enc(r.who)}/${enc(r.limit)}`, () => live.tick())},
  ];
  live = view.live(async (signal) => {
    replace(vhostBody, table(columns('vhost'), rows(await api.get('/vhost-limits', {signal}), 'vhost'), {testid: 'vhost-limits', empty: 'No vhost limits.'}));
    replace(userBody, table(columns('user'), rows(await api.get('/user-limits', {signal}), 'user'), {testid: 'user-limits', empty: 'No user limits.'}));
  });
}

function definitions(view) {
  const vhost = h('select', {name: 'vhost'}, h('option', {value: ''}, 'the whole broker'), vhostNames().map((v) => h('option', {value: v}, v)));
  const file = h('input', {type: 'file', accept: 'application/json,.json', 'data-testid': 'definitions-file'});
  const result = h('p', {'data-testid': 'definitions-result', role: 'status'});
  const path = () => (vhost.value ? `/definitions/${enc(vhost.value)}` : '/definitions');
  const exportButton = h('button', {class: 'primary', 'data-testid': 'export', onclick: () => attempt(async () => {
    const doc = await api.get(path());
    const blob = new Blob([JSON.stringify(doc, null, 2)], {type: 'application/json'});
    const link = h('a', {href: URL.createObjectURL(blob), download: `mailslot-definitions${vhost.value ? `-${vhost.value.replace(/[^\w.-]+/g, '_')}` : ''}.json`});
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10000);
    result.textContent = `Exported ${num((doc.queues || []).length)} queues, ${num((doc.exchanges || []).length)} exchanges, ` +
      `${num((doc.bindings || []).length)} bindings${doc.users ? `, ${num(doc.users.length)} users` : ''}.`;
  })}, 'Export');
  const importButton = h('button', {'data-testid': 'import', onclick: () => attempt(async () => {
    if (!file.files.length) throw new Error('Choose a definitions file first.');
    const doc = parseJson(await file.files[0].text(), 'the file');
    await api.post(path(), doc);
    await reloadVhosts();
    result.textContent = `Imported ${file.files[0].name}: ${num((doc.queues || []).length)} queues, ${num((doc.exchanges || []).length)} exchanges, ` +
      `${num((doc.bindings || []).length)} bindings.`;
  })}, 'Import');
  append(view.main, h('h1', {}, 'Definitions'),
    h('p', {class: 'muted'}, 'RabbitMQ\'s definitions file format: users, vhosts, permissions, policies, parameters, queues, exchanges and bindings. '
      + 'A file exported from RabbitMQ imports here, and the other way round.'),
    section('Export and import', h('div', {class: 'inline-form'}, field('Of', vhost), exportButton),
      h('div', {class: 'inline-form'}, field('Definitions file', file), importButton), result));
}

const PAGES = {users, vhosts, permissions, policies, limits, definitions};

export function render(view) {
  const tab = PAGES[view.params.tab] ? view.params.tab : 'users';
  append(view.main, tabs(TABS.map(([id, label]) => [`#/admin/${id}`, label]), `#/admin/${tab}`));
  PAGES[tab](view);
}
